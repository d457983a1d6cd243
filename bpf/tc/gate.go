package tc

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf/internal/load"
	"github.com/kfm-project/kfm/bpf/rewrite"
)

// The gate (see the package documentation): kfm's own program, first of
// kfm's programs on the hook, writes the set of programs the packet is to
// run into one word of skb->cb[]; every program of the chain is loaded
// behind a check of its own bit in that word (rewrite.TCNextGated).
const (
	// GateCB is the skb->cb[] word (struct __sk_buff's cb[GateCB]) the
	// gate writes and kfm's programs read. Programs chained by the tcx
	// and tc backends, and other tools' programs placed between kfm's,
	// must not write it.
	GateCB = 4
	// GateSlots is the number of bits of the gate word: how many of kfm's
	// programs can be attached to one hook at once. During a change the
	// old and the new chain are both attached, hence MaxPrograms.
	GateSlots = 32
	// GateProgramName is the kernel name of the gate program.
	GateProgramName = "kfm_gate"
	// GateFilterName is the name of the gate's cls_bpf filter (tc), as
	// `tc filter show` prints it.
	GateFilterName = "kfm-gate"
	// GatePriority is the classic tc priority of the gate's filter; kfm's
	// programs go above it, up to MaxPriority.
	GatePriority = MinPriority
)

// gateOffset is offsetof(struct __sk_buff, cb[GateCB]): twelve 32-bit
// fields precede cb[] (len ... tc_index), stable UAPI since Linux 4.x.
const gateOffset = 12*4 + GateCB*4

// pinGate is the name of the gate's pinned TCX link (tcx).
const pinGate = "gate"

// newGate loads a gate program that writes mask into the gate word and
// continues (-1) to the next program.
func newGate(mask uint32) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    GateProgramName,
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm32(asm.R2, int32(mask)),
			asm.StoreMem(asm.R1, gateOffset, asm.R2, asm.Word),
			asm.Mov.Imm(asm.R0, TCXNext),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load the gate program: %w", load.Errno(err))
	}
	return p, nil
}

// gateRewrite returns the rewrite of a chain program that runs with gate
// bit slot and maps proceed (as verdicts) to -1.
func gateRewrite(slot int, proceed []int32) func(asm.Instructions) (asm.Instructions, error) {
	return func(insns asm.Instructions) (asm.Instructions, error) {
		return rewrite.TCNextGated(insns, proceed, rewrite.Gate{Offset: gateOffset, Bit: uint8(slot)})
	}
}

// errNoSlot: no free gate bit (cannot happen within MaxPrograms).
var errNoSlot = errors.New("no free gate bit")

// freeSlot returns the lowest bit not set in used.
func freeSlot(used uint32) (int, error) {
	if used == ^uint32(0) {
		return 0, fmt.Errorf("%d programs attached: %w", GateSlots, errNoSlot)
	}
	return bits.TrailingZeros32(^used), nil
}

func slotBit(slot int) uint32 { return 1 << uint(slot) }

// maskOf is the gate word that lets exactly the gated programs of es run.
func maskOf(es []*entry) uint32 {
	var m uint32
	for _, e := range es {
		if !e.ungated {
			m |= slotBit(e.m.Slot)
		}
	}
	return m
}
