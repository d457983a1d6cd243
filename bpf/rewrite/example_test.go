package rewrite_test

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf/rewrite"
)

// A program that returns XDP_PASS (2) from two places, rewritten to
// tail-call slot 1 of the chain map on XDP_PASS.
func ExampleTailCall() {
	prog := asm.Instructions{
		asm.JEq.Imm(asm.R1, 0, "other").WithSymbol("prog"),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("other"),
		asm.Return(),
	}
	out, err := rewrite.TailCall(prog, rewrite.TailCallOptions{ProceedOn: []int32{2}, Map: "kfm_chain", Index: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(out)
	// Output:
	// prog:
	// 	 0: StXMemDW dst: rfp src: r1 off: -8 imm: 0
	// 	 1: JEqImm dst: r1 off: -1 imm: 0 <other>
	// 	 2: MovImm dst: r0 imm: 2
	// 	 3: Ja off: -1 <kfm.rw.1>
	// other:
	// 	 4: MovImm dst: r0 imm: 1
	// 	 5: Ja off: -1 <kfm.rw.1>
	// kfm.rw.1:
	// 	 6: JEq32Imm dst: r0 off: -1 imm: 2 <kfm.rw.0>
	// 	 7: Exit
	// kfm.rw.0:
	// 	 8: MovReg dst: r6 src: r0
	// 	 9: LdXMemDW dst: r1 src: rfp off: -8 imm: 0
	// 	10: LoadMapPtr dst: r2 fd: 0 <kfm_chain>
	// 	12: MovImm32 dst: r3 imm: 1
	// 	13: Call FnTailCall
	// 	14: MovReg dst: r0 src: r6
	// 	15: Exit
}

// A TC program returning TC_ACT_OK (0), rewritten so that TC_ACT_OK becomes
// -1 (TCX_NEXT): the next program of a tcx or cls_bpf chain runs.
func ExampleTCNext() {
	prog := asm.Instructions{
		asm.Mov.Imm(asm.R0, 0).WithSymbol("prog"),
		asm.Return(),
	}
	out, err := rewrite.TCNext(prog, []int32{0})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(out)
	// Output:
	// prog:
	// 	 0: MovImm dst: r0 imm: 0
	// 	 1: Ja off: -1 <kfm.rw.1>
	// kfm.rw.1:
	// 	 2: JEq32Imm dst: r0 off: -1 imm: 0 <kfm.rw.0>
	// 	 3: Exit
	// kfm.rw.0:
	// 	 4: MovImm dst: r0 imm: -1
	// 	 5: Exit
}

// The same program behind a gate: it runs only when bit 3 of skb->cb[4]
// (offset 64 in struct __sk_buff) is set, and otherwise returns -1 at once.
func ExampleTCNextGated() {
	prog := asm.Instructions{
		asm.Mov.Imm(asm.R0, 0).WithSymbol("prog"),
		asm.Return(),
	}
	out, err := rewrite.TCNextGated(prog, []int32{0}, rewrite.Gate{Offset: 64, Bit: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(out)
	// Output:
	// prog:
	// 	 0: LdXMemW dst: r0 src: r1 off: 64 imm: 0
	// 	 1: JSetImm dst: r0 off: -1 imm: 8 <kfm.rw.0>
	// 	 2: MovImm dst: r0 imm: -1
	// 	 3: Exit
	// kfm.rw.0:
	// 	 4: MovImm dst: r0 imm: 0
	// 	 5: Ja off: -1 <kfm.rw.2>
	// kfm.rw.2:
	// 	 6: JEq32Imm dst: r0 off: -1 imm: 0 <kfm.rw.1>
	// 	 7: Exit
	// kfm.rw.1:
	// 	 8: MovImm dst: r0 imm: -1
	// 	 9: Exit
}
