package analyze_test

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf/analyze"
)

// A program that returns XDP_PASS on every path and only reads the packet
// is a read-only observer.
func ExampleInstructions() {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // r2 = ctx->data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // r3 = ctx->data_end
		asm.Mov.Imm(asm.R0, 2),                   // XDP_PASS
		asm.Return(),
	}
	c := analyze.Instructions(ebpf.XDP, insns, nil)
	fmt.Println(c.Type, c.Returns, c.ReadOnlyObserver, c.Instructions)
	// Output: xdp [2] true 4
}

// Writing the packet is found through the pointer's origin.
func ExampleInstructions_writesPacket() {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // r2 = ctx->data
		asm.Add.Imm(asm.R2, 12),
		asm.StoreImm(asm.R2, 0, 0, asm.Byte), // *(u8 *)(r2 + 0) = 0
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	}
	c := analyze.Instructions(ebpf.XDP, insns, nil)
	fmt.Println(c.WritesPacket, c.Why[analyze.FactWritesPacket])
	// Output: true instruction 2 stores through a packet pointer
}

func ExampleHelperName() {
	fmt.Println(analyze.HelperName(asm.FnProbeReadKernel), analyze.HelperName(asm.FnL4CsumReplace))
	// Output: bpf_probe_read_kernel bpf_l4_csum_replace
}
