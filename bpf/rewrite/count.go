package rewrite

import (
	"errors"

	"github.com/cilium/ebpf/asm"
)

// Verdict counters (see [Count]): the layout of the value of the counter
// map. The value is CountSlots 64-bit counters; slot i counts the packets
// for which the program returned verdict i-1, for verdicts -1 to
// CountSlots-3, and the last slot counts every other verdict. The layout is
// the same for every hook, so that one instruction sequence serves all:
//
//	slot  0   1   2   3   4   5   6   7   8   9
//	TC   -1  ok  rcl shot pipe stln queu rept redir other
//	XDP   -  abrt drop pass tx  redir  -   -   -  other
//
// For XDP, slot 0 and slots 6 to 9 all count verdicts the kernel does not
// define (it treats them as XDP_ABORTED).
const (
	// CountSlots is the number of 64-bit counters in a counter map value.
	CountSlots = 10
	// CountValueSize is the value size of a counter map in bytes.
	CountValueSize = CountSlots * 8
	// CountOther is the slot of the verdicts without a slot of their own.
	CountOther = CountSlots - 1
)

// CountSlot returns the slot of the counter map value that counts verdict
// v (the low 32 bits of r0 at exit, as a signed number).
func CountSlot(v int32) int {
	if v >= -1 && v <= CountSlots-3 {
		return int(v) + 1
	}
	return CountOther
}

// Count returns a copy of insns whose main function counts its own
// verdicts: every exit becomes a jump to one epilogue that looks up key 0
// of the map referenced by name mapName (a BPF_MAP_TYPE_PERCPU_ARRAY with
// 4-byte keys, at least one entry and values of CountValueSize bytes: the
// caller supplies it as it does the chain map of [TailCall]), adds one to
// the slot of the verdict (see [CountSlot]) and returns the verdict
// unchanged. insns is not modified.
//
// The epilogue keeps the verdict in r6 (at an exit nothing but r0 is live,
// and helper calls preserve r6) and stores the 4-byte key in an 8-byte
// stack slot below everything the main function uses, so that it fails with
// ErrNoStackRoom only when the program leaves no 8 bytes of its 512. The
// kernel (6.10 and later) inlines the lookup of a per-CPU array, so the
// count costs about fifteen instructions and no helper call.
//
// Count composes with the other rewrites: applied first, its epilogue ends
// in the exit that [TailCall], [TCNext] and [TCNextGated] then send to
// theirs, so the count sees the program's own verdict before it is mapped
// to a tail call or to -1, and TCNextGated's gate check, which returns
// before the program runs, is not counted.
func Count(insns asm.Instructions, mapName string) (asm.Instructions, error) {
	if mapName == "" {
		return nil, errors.New("rewrite: Count needs the name of the counter map")
	}
	end, err := mainEnd(insns)
	if err != nil {
		return nil, err
	}
	slot, err := freeStack(insns, 8, " and counting verdicts needs 8")
	if err != nil {
		return nil, err
	}
	off := int16(-slot)
	r := newRewriter(insns, end)
	done, index := r.label(), r.label()
	epi := []asm.Instruction{
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.StoreImm(asm.R10, off, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(off)),
		asm.LoadMapPtr(asm.R1, 0).WithReference(mapName),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, done),
		// slot = (u32)verdict + 1, or CountOther when above CountSlots-2
		asm.Mov.Reg32(asm.R1, asm.R6),
		asm.Add.Imm32(asm.R1, 1),
		asm.JLE.Imm(asm.R1, CountSlots-2, index),
		asm.Mov.Imm(asm.R1, CountOther),
		asm.LSh.Imm(asm.R1, 3).WithSymbol(index),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R0, asm.R6).WithSymbol(done),
		asm.Return(),
	}
	return r.apply(nil, "", epi)
}
