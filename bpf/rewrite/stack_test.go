package rewrite

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"
)

func TestStackDepth(t *testing.T) {
	ret := []asm.Instruction{asm.Mov.Imm(asm.R0, 2), asm.Return()}
	prog := func(insns ...asm.Instruction) asm.Instructions {
		p := append(asm.Instructions{}, insns...)
		p = append(p, ret...)
		p[0] = p[0].WithSymbol("main")
		return p
	}
	for _, tc := range []struct {
		name  string
		insns asm.Instructions
		depth int
		slot  int // expected spill offset (0: TailCall must fail with err)
		err   error
	}{
		{"no stack", prog(asm.Mov.Imm(asm.R3, 0)), 0, -8, nil},
		{"direct store", prog(asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord)), 8, -16, nil},
		{"odd size rounds up", prog(asm.StoreImm(asm.R10, -12, 0, asm.Word)), 12, -24, nil},
		{"load below", prog(asm.LoadMem(asm.R3, asm.R10, -40, asm.Byte)), 40, -48, nil},
		{"pointer passed to a helper", prog(
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -64),
			asm.FnMapLookupElem.Call(),
		), 64, -72, nil},
		{"pointer through two registers and a sub", prog(
			asm.Mov.Reg(asm.R4, asm.R10),
			asm.Sub.Imm(asm.R4, 100),
			asm.Mov.Reg(asm.R5, asm.R4),
			asm.StoreImm(asm.R5, -4, 0, asm.Word),
		), 104, -112, nil},
		{"spilled stack pointer reloaded", prog(
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -16),
			asm.StoreMem(asm.R10, -8, asm.R2, asm.DWord),
			asm.LoadMem(asm.R3, asm.R10, -8, asm.DWord),
			stImm64(asm.R3, -32, 0),
		), 48, -56, nil},
		{"stack pointer stored to a map value", prog(
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -200),
			asm.StoreMem(asm.R6, 0, asm.R2, asm.DWord),
		), 200, -208, nil},
		{"index added to a stack pointer", prog(
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -32),
			asm.Add.Reg(asm.R2, asm.R3),
			asm.StoreImm(asm.R2, 0, 0, asm.Byte),
		), 32, -40, nil},
		{"two paths, deeper one counts", prog(
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.JEq.Imm(asm.R1, 0, "shallow"),
			asm.Add.Imm(asm.R2, -96),
			asm.Ja.Label("use"),
			asm.Add.Imm(asm.R2, -8).WithSymbol("shallow"),
			stImm64(asm.R2, 0, 0).WithSymbol("use"),
		), 96, -104, nil},
		{"504 bytes: the last slot is free", prog(stImm64(asm.R10, -504, 0)), 504, -512, nil},
		{"508 bytes: no room", prog(asm.StoreImm(asm.R10, -508, 0, asm.Word)), 508, 0, ErrNoStackRoom},
		{"512 bytes: exactly full", prog(stImm64(asm.R10, -512, 0)), 512, 0, ErrNoStackRoom},
		{"variable amount subtracted", prog(
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Sub.Reg(asm.R2, asm.R3),
			asm.StoreImm(asm.R2, 0, 0, asm.Byte),
		), -1, 0, ErrStackUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			insns := rawJumps(t, tc.insns)
			depth, err := StackDepth(insns)
			switch {
			case tc.depth < 0:
				if !errors.Is(err, tc.err) {
					t.Fatalf("StackDepth: %v, want %v", err, tc.err)
				}
			case err != nil:
				t.Fatalf("StackDepth: %v", err)
			case depth != tc.depth:
				t.Errorf("StackDepth = %d, want %d", depth, tc.depth)
			}
			got, err := TailCall(insns, TailCallOptions{ProceedOn: []int32{2}, Map: chainMap, Index: 1})
			if tc.slot == 0 {
				if !errors.Is(err, tc.err) {
					t.Fatalf("TailCall: %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			spill := got[0]
			if spill.OpCode != asm.StoreMemOp(asm.DWord) || spill.Dst != asm.R10 || spill.Src != asm.R1 || int(spill.Offset) != tc.slot {
				t.Errorf("entry spill %v, want *(u64 *)(r10 %d) = r1", spill, tc.slot)
			}
		})
	}
}

// TestStackDepthLoop: a loop that walks a pointer down the stack terminates
// (widening) and is reported as out of bounds.
func TestStackDepthLoop(t *testing.T) {
	insns := rawJumps(t, asm.Instructions{
		asm.Mov.Reg(asm.R2, asm.R10).WithSymbol("main"),
		asm.Add.Imm(asm.R2, -8).WithSymbol("loop"),
		stImm64(asm.R2, 0, 0),
		asm.JNE.Imm(asm.R3, 0, "loop"),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	})
	if _, err := StackDepth(insns); !errors.Is(err, ErrInvalid) {
		t.Errorf("StackDepth: %v, want ErrInvalid", err)
	}
	// Walking up is fine: the lowest address is the start.
	insns = rawJumps(t, asm.Instructions{
		asm.Mov.Reg(asm.R2, asm.R10).WithSymbol("main"),
		asm.Add.Imm(asm.R2, -64),
		stImm64(asm.R2, 0, 0).WithSymbol("loop"),
		asm.Add.Imm(asm.R2, 8),
		asm.JNE.Reg(asm.R2, asm.R10, "loop"),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	})
	if d, err := StackDepth(insns); err != nil || d != 64 {
		t.Errorf("StackDepth = %d, %v; want 64", d, err)
	}
}
