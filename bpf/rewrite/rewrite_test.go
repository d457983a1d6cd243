package rewrite

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

const chainMap = "kfm_chain"

// Synthetic main functions. The VM starts them with r1 = ctx and r2 = an
// input that selects the path.
var (
	// several exits, forward jumps over them
	progExits = asm.Instructions{
		asm.JEq.Imm(asm.R2, 1, "one").WithSymbol("main"),
		asm.JEq.Imm(asm.R2, 2, "two"),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("one"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 3).WithSymbol("two"),
		asm.Return(),
	}
	// a backward loop whose head is the first instruction; r1 is
	// clobbered before jumping back, so re-running an entry spill would
	// lose the context
	progLoop = asm.Instructions{
		asm.Add.Imm(asm.R3, 1).WithSymbol("main"),
		asm.Mov.Imm(asm.R1, 0),
		asm.JLT.Imm(asm.R3, 3, "main"),
		asm.Mov.Reg(asm.R0, asm.R3),
		asm.Return(),
	}
	// an ld_imm64 between a jump and its target, and after it
	progLdImm = asm.Instructions{
		asm.JEq.Imm(asm.R2, 1, "skip").WithSymbol("main"),
		asm.LoadImm(asm.R4, 0x1122334455667788, asm.DWord),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
		asm.LoadImm(asm.R4, 0x0102030405060708, asm.DWord).WithSymbol("skip"),
		asm.Mov.Reg(asm.R0, asm.R4),
		asm.Return(),
	}
	// a main function calling a subprogram that has two exits of its own
	progSub = asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1).WithSymbol("main"),
		asm.Mov.Reg(asm.R1, asm.R2),
		asm.Call.Label("sub"),
		asm.Return(),
		asm.JEq.Imm(asm.R1, 1, "sub_one").WithSymbol("sub"),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 7).WithSymbol("sub_one"),
		asm.Return(),
	}
	// gotol: a Jump32-class ja with the target in the constant
	progGotol = asm.Instructions{
		asm.LongJump("two").WithSymbol("main"),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("two"),
		asm.Return(),
	}
	// stack users: 16 bytes, then exactly the 504 that leave one slot
	progStack16 = asm.Instructions{
		stImm64(asm.R10, -16, 0).WithSymbol("main"),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	}
)

// rawJumps strips the symbolic references from jumps inside functions, as
// cilium/ebpf's ELF reader leaves them: raw offsets.
func rawJumps(t testing.TB, insns asm.Instructions) asm.Instructions {
	t.Helper()
	cp := make(asm.Instructions, len(insns))
	copy(cp, insns)
	syms, err := cp.SymbolOffsets()
	if err != nil {
		t.Fatal(err)
	}
	raw := map[int]int{}
	off := 0
	for i := range cp {
		raw[i] = off
		off += int(cp[i].Width())
	}
	for i := range cp {
		ins := &cp[i]
		if !isJump(ins) || ins.Reference() == "" {
			continue
		}
		target := raw[syms[ins.Reference()]]
		if isLongJump(ins) {
			ins.Constant = int64(target - raw[i] - 1)
		} else {
			ins.Offset = int16(target - raw[i] - 1)
		}
		*ins = ins.WithReference("")
	}
	// Only function starts keep their symbols, as in an ELF-loaded spec.
	called := map[string]bool{}
	for _, ref := range cp.FunctionReferences() {
		called[ref] = true
	}
	for i := 1; i < len(cp); i++ {
		if s := cp[i].Symbol(); s != "" && !called[s] {
			cp[i] = cp[i].WithSymbol("")
		}
	}
	return cp
}

// stImm64 is `*(u64 *)(dst + off) = imm`, which asm.StoreImm refuses to
// build although clang emits it.
func stImm64(dst asm.Register, off int16, imm int64) asm.Instruction {
	return asm.Instruction{OpCode: asm.StoreImmOp(asm.DWord), Dst: dst, Offset: off, Constant: imm}
}

func TestTailCallPaths(t *testing.T) {
	for _, tc := range []struct {
		name    string
		insns   asm.Instructions
		proceed []int32
		inputs  map[uint64]uint64 // input -> verdict of the original
	}{
		{"several exits", progExits, []int32{2}, map[uint64]uint64{0: 2, 1: 1, 2: 3}},
		{"several exits, two proceed-on", progExits, []int32{1, 2}, map[uint64]uint64{0: 2, 1: 1, 2: 3}},
		{"backward jump to the first instruction", progLoop, []int32{3}, map[uint64]uint64{0: 3}},
		{"ld_imm64", progLdImm, []int32{2}, map[uint64]uint64{0: 2, 1: 0x0102030405060708}},
		{"subprogram", progSub, []int32{2}, map[uint64]uint64{0: 2, 1: 7}},
		{"gotol", progGotol, []int32{2}, map[uint64]uint64{0: 2}},
		{"stack user", progStack16, []int32{2}, map[uint64]uint64{0: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := rawJumps(t, tc.insns)
			got, err := TailCall(orig, TailCallOptions{ProceedOn: tc.proceed, Map: chainMap, Index: 5})
			if err != nil {
				t.Fatal(err)
			}
			for in, want := range tc.inputs {
				// The original program's verdict.
				v0 := newVM(t, orig)
				r, err := v0.run(in)
				if err != nil || r != want {
					t.Fatalf("original(%d) = %d, %v; want %d", in, r, err, want)
				}
				proceeds := false
				for _, p := range tc.proceed {
					proceeds = proceeds || uint32(want) == uint32(p)
				}

				// Tail call succeeds: the program ends there.
				v := newVM(t, got)
				v.tailCall = func(uint64, string, uint32) bool { return true }
				r, err = v.run(in)
				if err != nil {
					t.Fatalf("rewritten(%d): %v\n%v", in, err, got)
				}
				if proceeds {
					if r != vmTailCalled || len(v.calls) != 1 {
						t.Fatalf("rewritten(%d) = %#x after %d tail calls, want a tail call", in, r, len(v.calls))
					}
					c := v.calls[0]
					if c.ctx != vmCtx || c.m != chainMap || c.index != 5 {
						t.Errorf("tail call (ctx %#x, map %q, index %d), want (%#x, %q, 5)", c.ctx, c.m, c.index, vmCtx, chainMap)
					}
				} else if r != want || len(v.calls) != 0 {
					t.Fatalf("rewritten(%d) = %#x after %d tail calls, want %#x and none", in, r, len(v.calls), want)
				}

				// Tail call falls through: the verdict is kept.
				v = newVM(t, got)
				r, err = v.run(in)
				if err != nil || r != want {
					t.Fatalf("rewritten(%d) with an empty slot = %#x, %v; want %#x", in, r, err, want)
				}
			}
		})
	}
}

func TestTCNext(t *testing.T) {
	const next = ^uint64(0) // -1
	for _, tc := range []struct {
		name    string
		insns   asm.Instructions
		proceed []int32
		want    map[uint64]uint64
	}{
		{"ok proceeds", progExits, []int32{2}, map[uint64]uint64{0: next, 1: 1, 2: 3}},
		{"two verdicts", progExits, []int32{1, 3}, map[uint64]uint64{0: 2, 1: next, 2: next}},
		{"unspec only: unchanged", progExits, []int32{-1}, map[uint64]uint64{0: 2, 1: 1, 2: 3}},
		{"nothing proceeds: unchanged", progExits, nil, map[uint64]uint64{0: 2, 1: 1, 2: 3}},
		{"loop", progLoop, []int32{3}, map[uint64]uint64{0: next}},
		{"ld_imm64", progLdImm, []int32{8}, map[uint64]uint64{0: 2, 1: 0x0102030405060708}},
		{"subprogram exits return to main", progSub, []int32{7}, map[uint64]uint64{0: 2, 1: next}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := rawJumps(t, tc.insns)
			got, err := TCNext(orig, tc.proceed)
			if err != nil {
				t.Fatal(err)
			}
			for in, want := range tc.want {
				r, err := newVM(t, got).run(in)
				if err != nil || r != want {
					t.Errorf("rewritten(%d) = %#x, %v; want %#x\n%v", in, r, err, want, got)
				}
			}
		})
	}
}

// TestTCNextGated: with its bit set in the gate word the rewritten program
// behaves as TCNext makes it behave; with the bit clear it returns -1 after
// the four instructions of the check, having run none of its own.
func TestTCNextGated(t *testing.T) {
	const next = ^uint64(0) // -1
	const off = 64          // struct __sk_buff cb[4]
	for _, tc := range []struct {
		name    string
		insns   asm.Instructions
		proceed []int32
		want    map[uint64]uint64 // with the bit set
	}{
		{"ok proceeds", progExits, []int32{2}, map[uint64]uint64{0: next, 1: 1, 2: 3}},
		{"nothing to map", progExits, nil, map[uint64]uint64{0: 2, 1: 1, 2: 3}},
		{"unspec only", progExits, []int32{-1}, map[uint64]uint64{0: 2, 1: 1, 2: 3}},
		{"backward jump to the first instruction", progLoop, []int32{3}, map[uint64]uint64{0: next}},
		{"ld_imm64", progLdImm, []int32{2}, map[uint64]uint64{0: next, 1: 0x0102030405060708}},
		{"subprogram", progSub, []int32{7}, map[uint64]uint64{0: 2, 1: next}},
		{"gotol", progGotol, []int32{2}, map[uint64]uint64{0: next}},
		{"stack user", progStack16, nil, map[uint64]uint64{0: 2}},
	} {
		for _, bit := range []uint8{0, 5, 31} {
			t.Run(fmt.Sprintf("%s/bit %d", tc.name, bit), func(t *testing.T) {
				orig := rawJumps(t, tc.insns)
				got, err := TCNextGated(orig, tc.proceed, Gate{Offset: off, Bit: bit})
				if err != nil {
					t.Fatal(err)
				}
				mine := uint64(1) << bit
				for _, word := range []uint64{mine, mine | 0x10 | 1<<30, ^uint64(0) >> 32, 0, ^mine & 0xffffffff, 1 << ((bit + 1) % 32)} {
					for in, want := range tc.want {
						v := newVM(t, got)
						v.store(vmCtx+off, 4, word)
						v.touched = nil
						r, err := v.run(in)
						if word&mine == 0 {
							want = next
							if err == nil && (v.steps != 4 || len(v.touched) != 4) {
								t.Errorf("gate word %#x: closed gate ran %d instructions, touched %d bytes", word, v.steps, len(v.touched))
							}
						}
						if err != nil || r != want {
							t.Errorf("gate word %#x: rewritten(%d) = %#x, %v; want %#x\n%v", word, in, r, err, want, got)
						}
					}
				}
			})
		}
	}
	if _, err := TCNextGated(progExits, nil, Gate{Offset: off, Bit: 32}); err == nil {
		t.Error("TCNextGated accepted bit 32")
	}
}

// TestSubprogramsUntouched: the rewrite never changes an instruction after
// the main function.
func TestSubprogramsUntouched(t *testing.T) {
	orig := rawJumps(t, progSub)
	end := MainLength(orig)
	if end != 4 {
		t.Fatalf("MainLength = %d, want 4", end)
	}
	for name, rw := range map[string]func() (asm.Instructions, error){
		"TailCall": func() (asm.Instructions, error) {
			return TailCall(orig, TailCallOptions{ProceedOn: []int32{2}, Map: chainMap, Index: 1})
		},
		"TCNext": func() (asm.Instructions, error) { return TCNext(orig, []int32{0}) },
		"TCNextGated": func() (asm.Instructions, error) {
			return TCNextGated(orig, []int32{0}, Gate{Offset: 64, Bit: 3})
		},
	} {
		got, err := rw()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sub := got[len(got)-(len(orig)-end):]
		for i, ins := range sub {
			o := orig[end+i]
			if ins.OpCode != o.OpCode || ins.Dst != o.Dst || ins.Src != o.Src || ins.Offset != o.Offset || ins.Constant != o.Constant || ins.Symbol() != o.Symbol() {
				t.Errorf("%s: subprogram instruction %d = %v, want %v", name, i, ins, o)
			}
		}
		if got.String() == orig.String() {
			t.Errorf("%s changed nothing", name)
		}
	}
}

func TestInputNotModified(t *testing.T) {
	orig := rawJumps(t, progExits)
	before := orig.String()
	if _, err := TailCall(orig, TailCallOptions{ProceedOn: []int32{2}, Map: chainMap, Index: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := TCNext(orig, []int32{2}); err != nil {
		t.Fatal(err)
	}
	if _, err := TCNextGated(orig, []int32{2}, Gate{Offset: 64, Bit: 1}); err != nil {
		t.Fatal(err)
	}
	if orig.String() != before {
		t.Errorf("input modified:\n%v\nwas\n%v", orig, before)
	}
}

// TestFuncAndLineInfo: the main function's func info, symbol and first line
// info start at the first instruction after the rewrite; the subprogram
// keeps its own.
func TestFuncAndLineInfo(t *testing.T) {
	mainFn := &btf.Func{Name: "main"}
	subFn := &btf.Func{Name: "sub"}
	orig := rawJumps(t, progSub)
	orig[0] = btf.WithFuncMetadata(orig[0], mainFn).WithSource(asm.Comment("int main(ctx)"))
	orig[4] = btf.WithFuncMetadata(orig[4], subFn).WithSource(asm.Comment("int sub(x)"))

	for name, rw := range map[string]func() (asm.Instructions, error){
		"TailCall": func() (asm.Instructions, error) {
			return TailCall(orig, TailCallOptions{ProceedOn: []int32{2}, Map: chainMap, Index: 1})
		},
		"TCNextGated": func() (asm.Instructions, error) {
			return TCNextGated(orig, []int32{2}, Gate{Offset: 64, Bit: 7})
		},
	} {
		t.Run(name, func(t *testing.T) { checkFuncAndLineInfo(t, rw, mainFn, subFn) })
	}
}

func checkFuncAndLineInfo(t *testing.T, rw func() (asm.Instructions, error), mainFn, subFn *btf.Func) {
	got, err := rw()
	if err != nil {
		t.Fatal(err)
	}
	if fn := btf.FuncMetadata(&got[0]); fn != mainFn {
		t.Errorf("first instruction func info = %v, want main", fn)
	}
	if got[0].Symbol() != "main" {
		t.Errorf("first instruction symbol = %q, want main", got[0].Symbol())
	}
	if got[0].Source() == nil || got[0].Source().String() != "int main(ctx)" {
		t.Errorf("first instruction line info = %v", got[0].Source())
	}
	var fns []*btf.Func
	for i := range got {
		if fn := btf.FuncMetadata(&got[i]); fn != nil {
			fns = append(fns, fn)
			if got[i].Source() == nil {
				t.Errorf("instruction %d starts %s but has no line info", i, fn.Name)
			}
		}
	}
	if len(fns) != 2 || fns[0] != mainFn || fns[1] != subFn {
		t.Errorf("func infos %v, want [main sub]", fns)
	}
	// The marshalled func info records point at the function starts.
	fi, _, err := btf.MarshalExtInfos(got, &btf.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fi) != 2*int(btf.FuncInfoSize) {
		t.Errorf("%d bytes of func info, want 2 records", len(fi))
	}
}

func TestErrors(t *testing.T) {
	full := asm.Instructions{
		stImm64(asm.R10, -512, 0).WithSymbol("main"),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	}
	var long asm.Instructions
	long = append(long, asm.Mov.Imm(asm.R0, 2).WithSymbol("main"), asm.Return())
	for i := 0; i < 40000; i++ {
		long = append(long, asm.Mov.Imm(asm.R0, 2))
	}
	long = append(long, asm.Return())

	out := asm.Instructions{
		asm.Call.Label("sub").WithSymbol("main"),
		asm.Ja.Label("sub"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("sub"),
		asm.Return(),
	}
	for _, tc := range []struct {
		name  string
		insns asm.Instructions
		want  error
	}{
		{"stack full", full, ErrNoStackRoom},
		{"jump out of range", long, ErrJumpRange},
		{"jump into a subprogram", out, ErrInvalid},
		{"empty", asm.Instructions{}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := TailCall(rawJumps(t, tc.insns), TailCallOptions{ProceedOn: []int32{2}, Map: chainMap, Index: 1})
			if !errors.Is(err, tc.want) {
				t.Errorf("TailCall: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := TailCall(progExits, TailCallOptions{ProceedOn: []int32{2}}); err == nil {
		t.Error("TailCall without a map name succeeded")
	}
}

func TestHasFunctionCalls(t *testing.T) {
	if !HasFunctionCalls(progSub) {
		t.Error("progSub: no function calls found")
	}
	if HasFunctionCalls(progExits) {
		t.Error("progExits: function calls found")
	}
}

// TestTCNextGatedGuard: a program that may store into the gate word gets
// the word back before it lets the packet go on (so the programs after it
// see the chain the gate chose), and leaves what it wrote when it ends the
// chain; a program that cannot write the word is not guarded.
func TestTCNextGatedGuard(t *testing.T) {
	const next = ^uint64(0) // -1
	const off = 64
	scribble := func(st asm.Instruction) asm.Instructions {
		return asm.Instructions{
			st.WithSymbol("main"),
			asm.JEq.Imm(asm.R2, 1, "one"),
			asm.JEq.Imm(asm.R2, 2, "unspec"),
			asm.Mov.Imm(asm.R0, 2), // ok: proceeds
			asm.Return(),
			asm.Mov.Imm(asm.R0, 7).WithSymbol("one"), // ends the chain
			asm.Return(),
			asm.Mov.Imm(asm.R0, -1).WithSymbol("unspec"), // goes on by itself
			asm.Return(),
		}
	}
	for _, tc := range []struct {
		name    string
		store   asm.Instruction
		guarded bool
		// wrote is the gate word the program leaves when it ends the
		// chain (guarded programs only).
		wrote uint64
	}{
		{"word", asm.StoreImm(asm.R1, off, 0, asm.Word), true, 0},
		{"byte inside", asm.StoreImm(asm.R1, off+3, 0, asm.Byte), true, 0x00345678},
		{"dword over it", stImm64(asm.R1, off-4, 0), true, 0},
		{"through another register", asm.StoreMem(asm.R6, off, asm.R1, asm.Word), true, vmCtx & 0xffffffff},
		{"the word before", asm.StoreImm(asm.R1, off-4, 0, asm.Word), false, 0},
		{"the word after", asm.StoreImm(asm.R1, off+4, 0, asm.Word), false, 0},
		{"stack", asm.StoreImm(asm.R10, off, 0, asm.Word), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			insns := rawJumps(t, scribble(tc.store))
			if tc.store.Dst == asm.R6 {
				// r6 = r1, so the store reaches the context.
				insns = append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1).WithSymbol("main")}, append(asm.Instructions{insns[0].WithSymbol("")}, insns[1:]...)...)
			}
			if got := MayStore(insns, off, 4); got != tc.guarded {
				t.Fatalf("MayStore = %v, want %v", got, tc.guarded)
			}
			got, err := TCNextGated(insns, []int32{2}, Gate{Offset: off, Bit: 4})
			if err != nil {
				t.Fatal(err)
			}
			const word = 0x12345678 | 1<<4
			for _, in := range []uint64{0, 1, 2} {
				v := newVM(t, got)
				v.store(vmCtx+off-4, 4, 0xa5a5a5a5)
				v.store(vmCtx+off, 4, word)
				v.store(vmCtx+off+4, 4, 0x5a5a5a5a)
				r, err := v.run(in)
				if err != nil {
					t.Fatal(err)
				}
				wantR := map[uint64]uint64{0: next, 1: 7, 2: next}[in]
				if r != wantR {
					t.Errorf("input %d: returned %#x, want %#x", in, r, wantR)
				}
				after := v.load(vmCtx+off, 4)
				switch {
				case !tc.guarded && after != word && tc.store.Dst != asm.R10 && tc.store.Offset != off-4 && tc.store.Offset != off+4:
					t.Errorf("input %d: unguarded program changed the word to %#x", in, after)
				case tc.guarded && wantR == next && after != word:
					t.Errorf("input %d: went on with gate word %#x, want it restored to %#x", in, after, uint64(word))
				case tc.guarded && wantR == 7 && after != tc.wrote:
					t.Errorf("input %d: ended the chain with gate word %#x, want %#x (what it wrote)", in, after, tc.wrote)
				}
			}
		})
	}

	// No room for the 16 bytes: refused.
	full := rawJumps(t, asm.Instructions{
		stImm64(asm.R10, -504, 0).WithSymbol("main"),
		asm.StoreImm(asm.R1, off, 0, asm.Word),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	})
	if _, err := TCNextGated(full, []int32{2}, Gate{Offset: off, Bit: 4}); !errors.Is(err, ErrNoStackRoom) {
		t.Errorf("a program using 504 stack bytes that writes the gate word: %v, want ErrNoStackRoom", err)
	}
}
