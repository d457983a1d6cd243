package rewrite

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Errors callers branch on.
var (
	// ErrNoStackRoom: the main function uses so much of the 512-byte stack
	// that there is no 8-byte slot left for the context pointer.
	ErrNoStackRoom = errors.New("no free stack slot for the context pointer")
	// ErrStackUnknown: the main function's stack use cannot be bounded
	// statically (a variable amount is subtracted from a stack pointer).
	ErrStackUnknown = errors.New("stack use cannot be determined")
	// ErrInvalid: the instructions are not a well-formed main function
	// (a jump leaves it or lands inside an ld_imm64, an instruction
	// cannot be decoded).
	ErrInvalid = errors.New("invalid instructions")
	// ErrJumpRange: after the rewrite a jump no longer fits its
	// instruction's offset field (programs of more than ~32000
	// instructions).
	ErrJumpRange = errors.New("jump out of range after rewrite")
)

// MaxStack is the size of a BPF program's stack frame.
const MaxStack = 512

// TailCallOptions configure TailCall.
type TailCallOptions struct {
	// ProceedOn are the verdicts (compared with the low 32 bits of r0) on
	// which the program tail-calls the next slot. Empty: the program never
	// goes on, and is returned unchanged.
	ProceedOn []int32
	// Map is the name by which the injected ld_imm64 references the
	// chain's PROG_ARRAY (asm reference metadata): the caller supplies the
	// map, e.g. as a MapSpec of that name plus a MapReplacement, or with
	// asm.Instructions.AssociateMap.
	Map string
	// Index is the slot of Map the program tail-calls (its own position in
	// the chain plus one).
	Index uint32
}

// TailCall returns a copy of insns whose main function tail-calls slot
// opts.Index of opts.Map whenever it returns one of opts.ProceedOn, and
// returns that verdict when the tail call falls through. insns is not
// modified.
func TailCall(insns asm.Instructions, opts TailCallOptions) (asm.Instructions, error) {
	if opts.Map == "" {
		return nil, errors.New("rewrite: TailCall needs the name of the chain map")
	}
	proceed := normalize(opts.ProceedOn)
	if len(proceed) == 0 {
		return slices.Clone(insns), nil
	}
	end, err := mainEnd(insns)
	if err != nil {
		return nil, err
	}
	slot, err := freeStack(insns, 8, "")
	if err != nil {
		return nil, err
	}
	off := int16(-slot)

	r := newRewriter(insns, end)
	tail := r.label()
	epi := []asm.Instruction{}
	for _, a := range proceed {
		epi = append(epi, asm.JEq.Imm32(asm.R0, a, tail))
	}
	epi = append(epi,
		asm.Return(),
		// r6..r9 are free here: nothing of the program runs after exit.
		asm.Mov.Reg(asm.R6, asm.R0).WithSymbol(tail),
		asm.LoadMem(asm.R1, asm.R10, off, asm.DWord),
		asm.LoadMapPtr(asm.R2, 0).WithReference(opts.Map),
		asm.Mov.Imm32(asm.R3, int32(opts.Index)),
		asm.FnTailCall.Call(),
		asm.Mov.Reg(asm.R0, asm.R6),
		asm.Return(),
	)
	prologue := []asm.Instruction{asm.StoreMem(asm.R10, off, asm.R1, asm.DWord)}
	return r.apply(prologue, "", epi)
}

// TCNext returns a copy of insns whose main function returns -1
// (TC_ACT_UNSPEC, TCX_NEXT) instead of any of proceedOn; other verdicts are
// returned unchanged. With nothing to map (proceedOn empty or only -1) the
// copy is unchanged. insns is not modified.
func TCNext(insns asm.Instructions, proceedOn []int32) (asm.Instructions, error) {
	proceed := slices.DeleteFunc(normalize(proceedOn), func(a int32) bool { return a == -1 })
	if len(proceed) == 0 {
		return slices.Clone(insns), nil
	}
	end, err := mainEnd(insns)
	if err != nil {
		return nil, err
	}
	r := newRewriter(insns, end)
	return r.apply(nil, "", tcNextEpilogue(r, proceed))
}

// tcNextEpilogue maps the verdicts in proceed to -1 and returns the others
// unchanged; nil when there is nothing to map.
func tcNextEpilogue(r *rewriter, proceed []int32) []asm.Instruction {
	if len(proceed) == 0 {
		return nil
	}
	next := r.label()
	var epi []asm.Instruction
	for _, a := range proceed {
		epi = append(epi, asm.JEq.Imm32(asm.R0, a, next))
	}
	return append(epi,
		asm.Return(),
		asm.Mov.Imm(asm.R0, -1).WithSymbol(next),
		asm.Return(),
	)
}

// Gate is the check [TCNextGated] puts in front of a program: a 32-bit word
// of the program's context that something running earlier for the same
// packet has written (kfm's gate program on a TC hook writes one bit per
// program of the chain the packet is to run), and the program's own bit in
// it.
type Gate struct {
	// Offset is the offset of the word in the context (for sched_cls
	// programs, that of one of struct __sk_buff's cb[] words).
	Offset int16
	// Bit is the program's bit in the word, 0 to 31.
	Bit uint8
}

// TCNextGated is [TCNext] behind a gate: the rewritten program first loads
// the 32-bit context word at gate.Offset and, unless bit gate.Bit of it is
// set, returns -1 (TC_ACT_UNSPEC, TCX_NEXT: "go on to the next program")
// without running any of its own code. Otherwise it runs as TCNext makes it
// run. The check costs four instructions (two when the program runs) and
// needs no helper call, map or stack. insns is not modified.
//
// A program that may itself store into the gate word (any store through a
// register other than r10 that overlaps gate.Offset..+4: the context is the
// only memory a store reaches at a constant offset from a pointer the
// verifier lets it write, so stores into packets or map values at that
// offset are counted too, harmlessly) would change what the programs after
// it see. Such a program is guarded: after the check it saves the context
// pointer and the word in 16 bytes of stack it does not use, and whenever it
// lets the packet go on (-1, or a verdict of proceedOn) it writes the word
// back first. That costs two stores on entry and three instructions on the
// way out, and fails with ErrNoStackRoom when the program leaves no room.
func TCNextGated(insns asm.Instructions, proceedOn []int32, gate Gate) (asm.Instructions, error) {
	if gate.Bit > 31 {
		return nil, fmt.Errorf("rewrite: gate bit %d: the gate word has 32 bits", gate.Bit)
	}
	proceed := slices.DeleteFunc(normalize(proceedOn), func(a int32) bool { return a == -1 })
	end, err := mainEnd(insns)
	if err != nil {
		return nil, err
	}
	r := newRewriter(insns, end)
	body := r.label()
	check := []asm.Instruction{
		asm.LoadMem(asm.R0, asm.R1, gate.Offset, asm.Word),
		asm.JSet.Imm(asm.R0, int32(uint32(1)<<gate.Bit), body),
		asm.Mov.Imm(asm.R0, -1),
		asm.Return(),
	}
	if !MayStore(insns, gate.Offset, 4) {
		return r.apply(check, body, tcNextEpilogue(r, proceed))
	}

	slot, err := freeStack(insns, 16, ", and it may write the gate word, which needs 16 to be kept")
	if err != nil {
		return nil, err
	}
	ctxOff, wordOff := int16(-slot), int16(-slot+8)
	prologue := append(check,
		asm.StoreMem(asm.R10, ctxOff, asm.R1, asm.DWord).WithSymbol(body),
		asm.StoreMem(asm.R10, wordOff, asm.R0, asm.Word),
	)
	// -1 of the program's own goes on as it is (as TCNext leaves it), a
	// proceed-on verdict becomes -1; both restore the word first.
	next, restore := r.label(), r.label()
	epi := []asm.Instruction{asm.JEq.Imm32(asm.R0, -1, restore)}
	for _, a := range proceed {
		epi = append(epi, asm.JEq.Imm32(asm.R0, a, next))
	}
	epi = append(epi, asm.Return())
	// Without proceed-on verdicts (none, or only -1) nothing jumps to
	// next, and the verifier refuses unreachable code (found by
	// FuzzVerifier).
	if len(proceed) > 0 {
		epi = append(epi, asm.Mov.Imm(asm.R0, -1).WithSymbol(next))
	}
	epi = append(epi,
		asm.LoadMem(asm.R1, asm.R10, ctxOff, asm.DWord).WithSymbol(restore),
		asm.LoadMem(asm.R2, asm.R10, wordOff, asm.Word),
		asm.StoreMem(asm.R1, gate.Offset, asm.R2, asm.Word),
		asm.Return(),
	)
	return r.apply(prologue, "", epi)
}

// MayStore reports whether an instruction of insns (subprograms included)
// stores into any of the size bytes at offset off from a register other
// than the frame pointer r10: plain stores and atomic operations of every
// width.
func MayStore(insns asm.Instructions, off int16, size int) bool {
	for i := range insns {
		op := insns[i].OpCode
		if !op.Class().IsStore() || insns[i].Dst == asm.R10 {
			continue
		}
		if m := op.Mode(); m != asm.MemMode && m != asm.AtomicMode {
			continue
		}
		start, n := int(insns[i].Offset), op.Size().Sizeof()
		if start < int(off)+size && start+n > int(off) {
			return true
		}
	}
	return false
}

// MainLength returns the number of instructions (not raw slots) of the main
// function of insns: everything before the first subprogram. A subprogram
// starts at an instruction that has BTF func info or a symbol that some
// instruction calls (or loads as a callback); symbols that are only jump
// targets do not end the main function.
func MainLength(insns asm.Instructions) int {
	called := map[string]bool{}
	for i := range insns {
		if ref := insns[i].Reference(); ref != "" && insns[i].IsFunctionReference() {
			called[ref] = true
		}
	}
	for i := 1; i < len(insns); i++ {
		if btf.FuncMetadata(&insns[i]) != nil {
			return i
		}
		if s := insns[i].Symbol(); s != "" && called[s] {
			return i
		}
	}
	return len(insns)
}

// HasFunctionCalls reports whether insns make bpf-to-bpf calls (or pass BPF
// functions as callbacks): kernels before 5.10 refuse tail calls from such
// programs.
func HasFunctionCalls(insns asm.Instructions) bool {
	for i := range insns {
		if insns[i].IsFunctionCall() || insns[i].IsLoadOfFunctionPointer() {
			return true
		}
	}
	return false
}

func normalize(as []int32) []int32 {
	out := slices.Clone(as)
	slices.Sort(out)
	return slices.Compact(out)
}

func roundUp8(n int) int { return (n + 7) &^ 7 }

// freeStack returns the distance below the frame pointer of n bytes of
// stack (8-aligned) that the main function of insns does not use; why says
// what they are for in the ErrNoStackRoom message.
func freeStack(insns asm.Instructions, n int, why string) (int, error) {
	depth, err := StackDepth(insns)
	if err != nil {
		return 0, err
	}
	slot := roundUp8(depth) + n
	if slot > MaxStack {
		return 0, fmt.Errorf("main function uses %d of %d stack bytes%s: %w", depth, MaxStack, why, ErrNoStackRoom)
	}
	return slot, nil
}

func mainEnd(insns asm.Instructions) (int, error) {
	if len(insns) == 0 {
		return 0, fmt.Errorf("no instructions: %w", ErrInvalid)
	}
	return MainLength(insns), nil
}

func isJump(ins *asm.Instruction) bool {
	op := ins.OpCode.JumpOp()
	return op != asm.InvalidJumpOp && op != asm.Call && op != asm.Exit
}

// isLongJump reports a gotol: an unconditional Jump32-class jump whose
// target is in the constant, not the offset.
func isLongJump(ins *asm.Instruction) bool {
	return ins.OpCode.Class() == asm.Jump32Class && ins.OpCode.JumpOp() == asm.Ja
}

func isExit(ins *asm.Instruction) bool {
	return ins.OpCode.Class() == asm.JumpClass && ins.OpCode.JumpOp() == asm.Exit
}

// rewriter holds a copy of the instructions while jumps are made symbolic.
type rewriter struct {
	insns   asm.Instructions
	end     int
	symbols map[string]bool
	next    int
}

func newRewriter(insns asm.Instructions, end int) *rewriter {
	r := &rewriter{insns: slices.Clone(insns), end: end, symbols: map[string]bool{}}
	for i := range insns {
		if s := insns[i].Symbol(); s != "" {
			r.symbols[s] = true
		}
	}
	return r
}

// label returns a symbol that no instruction has.
func (r *rewriter) label() string {
	for {
		s := fmt.Sprintf("kfm.rw.%d", r.next)
		r.next++
		if !r.symbols[s] {
			r.symbols[s] = true
			return s
		}
	}
}

// apply makes the main function's jumps symbolic, moves the function's
// symbol and func info to the prologue (if any), labels the main function's
// first instruction entry (when not empty: the prologue jumps there), sends
// every exit to the epilogue (if any) and assembles prologue + main +
// epilogue + subprograms.
func (r *rewriter) apply(prologue []asm.Instruction, entry string, epilogue []asm.Instruction) (asm.Instructions, error) {
	main := r.insns[:r.end]
	if len(prologue) > 0 {
		first := main[0]
		p0 := prologue[0]
		if s := first.Symbol(); s != "" {
			p0 = p0.WithSymbol(s)
			first = first.WithSymbol("")
		}
		if fn := btf.FuncMetadata(&first); fn != nil {
			p0 = btf.WithFuncMetadata(p0, fn)
			first = btf.WithFuncMetadata(first, nil)
		}
		if src := first.Source(); src != nil {
			p0 = p0.WithSource(src)
		}
		prologue = append([]asm.Instruction{p0}, prologue[1:]...)
		if entry != "" {
			first = first.WithSymbol(entry)
		}
		main[0] = first
	}
	if err := symbolize(main, r.label); err != nil {
		return nil, err
	}
	if len(epilogue) > 0 {
		exit := epilogue[0].Symbol()
		if exit == "" {
			exit = r.label()
			epilogue[0] = epilogue[0].WithSymbol(exit)
		}
		for i := range main {
			if isExit(&main[i]) {
				ja := asm.Ja.Label(exit)
				ja.Metadata = main[i].Metadata
				main[i] = ja.WithReference(exit)
			}
		}
	}
	out := make(asm.Instructions, 0, len(prologue)+len(r.insns)+len(epilogue))
	out = append(out, prologue...)
	out = append(out, main...)
	out = append(out, epilogue...)
	out = append(out, r.insns[r.end:]...)
	if err := checkJumps(out); err != nil {
		return nil, err
	}
	return out, nil
}

// symbolize turns every raw-offset jump of main into a reference to a
// symbol on its target.
func symbolize(main asm.Instructions, label func() string) error {
	raw := make([]int, len(main))
	index := make(map[int]int, len(main))
	off := 0
	for i := range main {
		raw[i] = off
		index[off] = i
		off += int(main[i].Width())
	}
	type fix struct {
		at, target int
	}
	var fixes []fix
	for i := range main {
		ins := &main[i]
		if !isJump(ins) {
			continue
		}
		if ins.OpCode.JumpOp() == asm.Ja && ins.OpCode.Source() != asm.ImmSource {
			// The kernel refuses it ("BPF_JA uses reserved fields"), and
			// cilium/ebpf would not encode it as the jump it looks like.
			return fmt.Errorf("instruction %d (%v): unconditional jump with a register source: %w", i, *ins, ErrInvalid)
		}
		if ins.Reference() != "" && (ins.Offset == -1 || isLongJump(ins) && ins.Constant == -1) {
			continue // already symbolic
		}
		delta := int(ins.Offset)
		if isLongJump(ins) {
			delta = int(ins.Constant)
		}
		t := raw[i] + 1 + delta
		j, ok := index[t]
		if !ok {
			return fmt.Errorf("instruction %d (%v): target %+d leaves the main function or lands inside an ld_imm64: %w", i, *ins, delta, ErrInvalid)
		}
		fixes = append(fixes, fix{i, j})
	}
	for _, f := range fixes {
		sym := main[f.target].Symbol()
		if sym == "" {
			sym = label()
			main[f.target] = main[f.target].WithSymbol(sym)
		}
		ins := &main[f.at]
		if isLongJump(ins) {
			ins.Constant = -1
		} else {
			ins.Offset = -1
		}
		*ins = ins.WithReference(sym)
	}
	return nil
}

// checkJumps resolves every symbolic jump of insns once and checks that the
// offset fits the instruction.
func checkJumps(insns asm.Instructions) error {
	syms := map[string]int{}
	raw := make([]int, len(insns))
	off := 0
	for i := range insns {
		raw[i] = off
		if s := insns[i].Symbol(); s != "" {
			if _, dup := syms[s]; dup {
				return fmt.Errorf("duplicate symbol %s: %w", s, ErrInvalid)
			}
			syms[s] = off
		}
		off += int(insns[i].Width())
	}
	for i := range insns {
		ins := &insns[i]
		if !isJump(ins) || ins.Reference() == "" {
			continue
		}
		target, ok := syms[ins.Reference()]
		if !ok {
			return fmt.Errorf("instruction %d jumps to unknown symbol %s: %w", i, ins.Reference(), ErrInvalid)
		}
		delta := target - raw[i] - 1
		if isLongJump(ins) {
			if delta < math.MinInt32 || delta > math.MaxInt32 {
				return fmt.Errorf("instruction %d: offset %d: %w", i, delta, ErrJumpRange)
			}
			continue
		}
		if delta < math.MinInt16 || delta > math.MaxInt16 {
			return fmt.Errorf("instruction %d: offset %d does not fit 16 bits: %w", i, delta, ErrJumpRange)
		}
	}
	return nil
}
