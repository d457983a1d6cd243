package rewrite

import (
	"fmt"
	"maps"

	"github.com/cilium/ebpf/asm"
)

// StackDepth returns how many bytes below the frame pointer the main
// function of insns uses: the lowest stack address it reads, writes, passes
// to a helper or a function, or stores as a pointer. See the package
// documentation for the analysis and why it is safe.
func StackDepth(insns asm.Instructions) (int, error) {
	end, err := mainEnd(insns)
	if err != nil {
		return 0, err
	}
	main := insns[:end]

	// Successor indices need raw offsets (ld_imm64 is two slots wide).
	raw := make([]int, len(main))
	index := make(map[int]int, len(main))
	off := 0
	for i := range main {
		raw[i] = off
		index[off] = i
		off += int(main[i].Width())
	}
	// Jumps already made symbolic by an earlier rewrite (Count, before
	// TailCall or TCNext) target their reference.
	symbol := map[string]int{}
	for i := range main {
		if s := main[i].Symbol(); s != "" {
			symbol[s] = i
		}
	}
	target := func(i int) (int, error) {
		ins := &main[i]
		if ref := ins.Reference(); ref != "" && (ins.Offset == -1 || isLongJump(ins) && ins.Constant == -1) {
			j, ok := symbol[ref]
			if !ok {
				return 0, fmt.Errorf("instruction %d (%v): jump to %s outside the main function: %w", i, *ins, ref, ErrInvalid)
			}
			return j, nil
		}
		delta := int(ins.Offset)
		if isLongJump(ins) {
			delta = int(ins.Constant)
		}
		j, ok := index[raw[i]+1+delta]
		if !ok {
			return 0, fmt.Errorf("instruction %d (%v): jump leaves the main function: %w", i, *ins, ErrInvalid)
		}
		return j, nil
	}

	a := &stackAnalysis{}
	states := make([]*frameState, len(main))
	entry := &frameState{slots: map[int]fpValue{}}
	entry.regs[asm.R10] = fpValue{known: true, off: 0}
	states[0] = entry
	work := []int{0}
	queued := make([]bool, len(main))
	queued[0] = true
	for len(work) > 0 {
		i := work[len(work)-1]
		work = work[:len(work)-1]
		queued[i] = false
		out := states[i].clone()
		if err := a.step(&main[i], out); err != nil {
			return 0, fmt.Errorf("instruction %d (%v): %w", i, main[i], err)
		}
		var succ []int
		ins := &main[i]
		switch {
		case isExit(ins):
		case isJump(ins):
			t, err := target(i)
			if err != nil {
				return 0, err
			}
			succ = append(succ, t)
			if ins.OpCode.JumpOp() != asm.Ja {
				succ = append(succ, i+1)
			}
		default:
			succ = append(succ, i+1)
		}
		for _, s := range succ {
			if s >= len(main) {
				return 0, fmt.Errorf("instruction %d (%v): falls off the end of the main function: %w", i, *ins, ErrInvalid)
			}
			if states[s] == nil {
				states[s] = out.clone()
			} else if !states[s].join(out) {
				continue
			}
			if !queued[s] {
				queued[s] = true
				work = append(work, s)
			}
		}
	}
	return a.depth, nil
}

// widen is the offset below which an fp-derived value is no longer followed
// (it is out of bounds anyway): it makes the analysis terminate on loops that
// walk the stack downwards.
const widen = -MaxStack - 8

// fpValue is what the analysis knows about a register or a spilled slot:
// nothing (not derived from r10), or r10 plus at least off.
type fpValue struct {
	known    bool
	off      int
	variable bool // r10 minus an unknown amount
}

func (v fpValue) join(o fpValue) fpValue {
	switch {
	case !v.known:
		return o
	case !o.known:
		return v
	}
	return fpValue{known: true, off: min(v.off, o.off), variable: v.variable || o.variable}
}

type frameState struct {
	regs  [asm.R10 + 1]fpValue
	slots map[int]fpValue // 8-byte spills of fp-derived values, by offset
}

func (s *frameState) clone() *frameState {
	c := &frameState{regs: s.regs, slots: maps.Clone(s.slots)}
	return c
}

// join merges o into s and reports whether s changed.
func (s *frameState) join(o *frameState) bool {
	changed := false
	for r := range s.regs {
		j := s.regs[r].join(o.regs[r])
		if j != s.regs[r] {
			s.regs[r] = j
			changed = true
		}
	}
	for k, v := range o.slots {
		j := s.slots[k].join(v)
		if j != s.slots[k] {
			s.slots[k] = j
			changed = true
		}
	}
	return changed
}

type stackAnalysis struct {
	depth int
}

// use records that the stack is used from offset off upwards.
func (a *stackAnalysis) use(v fpValue, extra int) error {
	if !v.known {
		return nil
	}
	if v.variable {
		return fmt.Errorf("stack pointer moved down by a variable amount: %w", ErrStackUnknown)
	}
	lowest := v.off + extra
	if lowest <= widen {
		return fmt.Errorf("stack access below %d bytes: %w", MaxStack, ErrInvalid)
	}
	if -lowest > a.depth {
		a.depth = -lowest
	}
	return nil
}

func clamp(v fpValue) fpValue {
	if v.known && v.off < widen {
		v.off = widen
	}
	return v
}

// loadAcquire is asm's (unexported) atomic load-acquire operation: the
// address is in src, the result in dst.
const loadAcquire asm.AtomicOp = 0x0001_0000

func (a *stackAnalysis) step(ins *asm.Instruction, s *frameState) error {
	op := ins.OpCode
	none := fpValue{}
	switch op.Class() {
	case asm.ALU64Class, asm.ALUClass, asm.LdClass, asm.LdXClass:
		if ins.Dst == asm.R10 {
			return fmt.Errorf("writes the read-only frame pointer: %w", ErrInvalid)
		}
	}
	switch cls := op.Class(); cls {
	case asm.ALU64Class:
		dst, src := ins.Dst, ins.Src
		if dst > asm.R10 || src > asm.R10 {
			return ErrInvalid
		}
		imm := op.Source() == asm.ImmSource
		switch op.ALUOp() {
		case asm.Mov:
			switch {
			case imm || ins.Offset != 0: // immediate, or sign-extending move
				s.regs[dst] = none
			default:
				s.regs[dst] = s.regs[src]
			}
		case asm.Add:
			switch {
			case imm:
				if s.regs[dst].known {
					s.regs[dst] = clamp(fpValue{known: true, off: s.regs[dst].off + int(ins.Constant), variable: s.regs[dst].variable})
				}
			case s.regs[dst].known && s.regs[src].known:
				s.regs[dst] = none
			case s.regs[src].known:
				// scalar + pointer: the verifier only allows indexes it
				// can bound; assume they are not negative (see doc).
				s.regs[dst] = s.regs[src]
			}
		case asm.Sub:
			switch {
			case imm:
				if s.regs[dst].known {
					s.regs[dst] = clamp(fpValue{known: true, off: s.regs[dst].off - int(ins.Constant), variable: s.regs[dst].variable})
				}
			case s.regs[dst].known && s.regs[src].known:
				s.regs[dst] = none // pointer difference
			case s.regs[dst].known:
				v := s.regs[dst]
				v.variable = true
				s.regs[dst] = v
			}
		default:
			s.regs[dst] = none
		}
	case asm.ALUClass:
		if ins.Dst > asm.R10 {
			return ErrInvalid
		}
		s.regs[ins.Dst] = none
	case asm.LdClass:
		switch op.Mode() {
		case asm.ImmMode:
			if ins.Dst > asm.R10 {
				return ErrInvalid
			}
			s.regs[ins.Dst] = none
		default: // legacy packet loads: implicit call clobbering r0-r5
			for r := asm.R0; r <= asm.R5; r++ {
				s.regs[r] = none
			}
		}
	case asm.LdXClass:
		if ins.Dst > asm.R10 || ins.Src > asm.R10 {
			return ErrInvalid
		}
		addr := s.regs[ins.Src]
		if err := a.use(addr, int(ins.Offset)); err != nil {
			return err
		}
		v := none
		if addr.known && !addr.variable && op.Size() == asm.DWord {
			v = s.slots[addr.off+int(ins.Offset)]
		}
		s.regs[ins.Dst] = v
	case asm.StClass, asm.StXClass:
		if ins.Dst > asm.R10 || ins.Src > asm.R10 {
			return ErrInvalid
		}
		if cls == asm.StXClass && op.Mode() == asm.AtomicMode && op.AtomicOp() == loadAcquire {
			if err := a.use(s.regs[ins.Src], int(ins.Offset)); err != nil {
				return err
			}
			s.regs[ins.Dst] = none
			return nil
		}
		addr := s.regs[ins.Dst]
		if err := a.use(addr, int(ins.Offset)); err != nil {
			return err
		}
		size := op.Size().Sizeof()
		if addr.known && !addr.variable {
			lo := addr.off + int(ins.Offset)
			for k := range s.slots {
				if k < lo+size && lo < k+8 {
					delete(s.slots, k)
				}
			}
		}
		if cls == asm.StXClass {
			val := s.regs[ins.Src]
			switch {
			case op.Mode() == asm.AtomicMode:
				if err := a.use(val, 0); err != nil {
					return err
				}
				if ins.OpCode.AtomicOp() == asm.CmpXchg {
					s.regs[asm.R0] = none
				} else if ins.OpCode.AtomicOp()&0x100 != 0 { // fetch
					s.regs[ins.Src] = none
				}
			case val.known && addr.known && !addr.variable && size == 8:
				s.slots[addr.off+int(ins.Offset)] = val
			case val.known:
				// A stack pointer stored where the analysis cannot
				// follow it: count it as used.
				if err := a.use(val, 0); err != nil {
					return err
				}
			}
		}
	case asm.JumpClass, asm.Jump32Class:
		if op.JumpOp() == asm.Call {
			for r := asm.R1; r <= asm.R5; r++ {
				if err := a.use(s.regs[r], 0); err != nil {
					return err
				}
			}
			for r := asm.R0; r <= asm.R5; r++ {
				s.regs[r] = none
			}
		}
	}
	return nil
}
