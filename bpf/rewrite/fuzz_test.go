package rewrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// FuzzRewriteVM decodes arbitrary bytes as a main function, rewrites it in
// both modes and compares, in the test VM, what the original and the
// rewrite return. The rewriter must never panic, must only fail with its
// documented errors, and must preserve the program's behaviour: in
// tail-call mode a proceed-on verdict tail-calls with the original context
// (or, when the call falls through, returns that verdict), in tc mode it
// becomes -1; every other verdict is returned unchanged.
func FuzzRewriteVM(f *testing.F) {
	for _, p := range []asm.Instructions{progExits, progLoop, progLdImm, progStack16} {
		var buf bytes.Buffer
		if err := rawJumps(f, p).Marshal(&buf, binary.LittleEndian); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes(), uint64(1), uint8(2))
	}
	f.Fuzz(func(t *testing.T, code []byte, arg uint64, proceed uint8) {
		if len(code) > 64*asm.InstructionSize {
			return
		}
		insns, err := asm.AppendInstructions(nil, bytes.NewReader(code), binary.LittleEndian, "linux")
		if err != nil || len(insns) == 0 {
			return
		}
		for i := range insns {
			if insns[i].IsFunctionReference() || insns[i].IsLoadFromMap() {
				return // calls and map loads need references the bytes cannot carry
			}
		}
		insns[0] = insns[0].WithSymbol("main")

		orig := newVMOrSkip(t, insns)
		if orig == nil {
			return
		}
		want, err := orig.run(arg)
		if err != nil {
			return // not a terminating program of the VM's subset
		}
		verdicts := []int32{int32(proceed % 8), int32(uint32(want))}
		if proceed&0x80 != 0 {
			verdicts = verdicts[:1]
		}
		proceeds := contains32(verdicts, uint32(want))

		rw, err := TailCall(insns, TailCallOptions{ProceedOn: verdicts, Map: "chain", Index: 3})
		switch {
		case errors.Is(err, ErrNoStackRoom), errors.Is(err, ErrStackUnknown), errors.Is(err, ErrInvalid), errors.Is(err, ErrJumpRange):
		case err != nil:
			t.Fatalf("TailCall: undocumented error %v", err)
		default:
			slot := int64(rw[0].Offset)
			for a := range orig.touched {
				if d := int64(a) - vmFPBase; d >= slot && d < slot+8 {
					return // the verifier would refuse this rewrite (slot overwritten)
				}
			}
			v := newVM(t, rw)
			got, err := v.run(arg)
			if err != nil || got != want {
				t.Fatalf("tail call falls through: got %#x, %v; want %#x\n%v", got, err, want, rw)
			}
			if proceeds != (len(v.calls) == 1) || len(v.calls) > 1 {
				t.Fatalf("%d tail calls for verdict %#x, proceed-on %v", len(v.calls), want, verdicts)
			}
			if proceeds && (v.calls[0].ctx != vmCtx || v.calls[0].index != 3 || v.calls[0].m != "chain") {
				t.Fatalf("tail call %+v", v.calls[0])
			}
		}

		rw, err = TCNext(insns, verdicts)
		switch {
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrJumpRange):
		case err != nil:
			t.Fatalf("TCNext: undocumented error %v", err)
		default:
			got, err := newVM(t, rw).run(arg)
			w := want
			if proceeds && !contains32([]int32{-1}, uint32(want)) {
				w = ^uint64(0)
			}
			if proceeds && uint32(want) == 0xffffffff {
				w = want
			}
			if err != nil || got != w {
				t.Fatalf("tc rewrite: got %#x, %v; want %#x", got, err, w)
			}
		}

		// Gated: with the bit set, as TCNext's rewrite with the same
		// context; with it clear, -1 after the four instructions of the
		// check.
		gate := Gate{Offset: 64, Bit: proceed % 32}
		rw, err = TCNextGated(insns, verdicts, gate)
		plain, plainErr := TCNext(insns, verdicts)
		switch {
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrJumpRange):
		case (errors.Is(err, ErrNoStackRoom) || errors.Is(err, ErrStackUnknown)) && MayStore(insns, gate.Offset, 4):
			// A guarded program needs 16 bytes of stack.
		case err != nil:
			t.Fatalf("TCNextGated: undocumented error %v", err)
		case plainErr != nil:
			t.Fatalf("TCNextGated succeeds where TCNext fails: %v", plainErr)
		default:
			for _, word := range []uint64{1 << gate.Bit, 0xffffffff, 0, 0xffffffff &^ (1 << gate.Bit)} {
				// The check leaves the word in r0, which only a program
				// the verifier refuses would read.
				v := newVM(t, plain)
				v.store(vmCtx+uint64(gate.Offset), 4, word)
				v.r0 = word
				w, werr := v.run(arg)
				v = newVM(t, rw)
				v.store(vmCtx+uint64(gate.Offset), 4, word)
				v.steps = 0
				got, err := v.run(arg)
				if word&(1<<gate.Bit) == 0 {
					if err != nil || got != ^uint64(0) || v.steps != 4 {
						t.Fatalf("gate word %#x: got %#x, %v after %d steps; want -1 after 4", word, got, err, v.steps)
					}
					continue
				}
				if werr != nil {
					continue // the context word changed the path: a loop too long for the VM
				}
				if err != nil || got != w {
					t.Fatalf("gate word %#x: got %#x, %v; want %#x as TCNext", word, got, err, w)
				}
			}
		}
	})
}

func contains32(as []int32, v uint32) bool {
	for _, a := range as {
		if uint32(a) == v {
			return true
		}
	}
	return false
}

// newVMOrSkip is newVM for arbitrary input: nil if the instructions do not
// marshal.
func newVMOrSkip(t *testing.T, insns asm.Instructions) (v *vm) {
	cp := make(asm.Instructions, len(insns))
	copy(cp, insns)
	var buf bytes.Buffer
	if err := cp.Marshal(&buf, binary.LittleEndian); err != nil {
		return nil
	}
	return newVM(t, insns)
}
