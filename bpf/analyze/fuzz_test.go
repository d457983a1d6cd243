package analyze_test

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf/analyze"
	"github.com/kfm-project/kfm/internal/testprogs"
)

// FuzzInstructions feeds arbitrary instruction streams (raw BPF bytecode)
// to the analysis, which must never panic or loop forever, for XDP and TC.
func FuzzInstructions(f *testing.F) {
	for _, name := range []string{"xdp_subprog", "xdp_buff_len", "xdp_probe_read"} {
		spec, err := testprogs.Spec(name)
		if err != nil {
			f.Fatal(err)
		}
		var buf bytes.Buffer
		insns := spec.Programs[name].Instructions
		// References are not encoded; keep the raw stream.
		for _, ins := range insns {
			ins = ins.WithReference("")
			if _, err := ins.Marshal(&buf, binary.LittleEndian); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(buf.Bytes(), false)
	}
	f.Add([]byte{0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}, true)
	f.Fuzz(func(t *testing.T, code []byte, tc bool) {
		var insns asm.Instructions
		r := bytes.NewReader(code)
		for r.Len() >= asm.InstructionSize {
			var ins asm.Instruction
			if err := ins.Unmarshal(r, binary.LittleEndian, "linux"); err != nil {
				break
			}
			insns = append(insns, ins)
		}
		typ := ebpf.XDP
		if tc {
			typ = ebpf.SchedCLS
		}
		c := analyze.Instructions(typ, insns, nil)
		if c.ReadOnlyObserver && (c.WritesPacket || c.Redirects || c.AdjustsPacket || !c.ReturnsKnown) {
			t.Fatalf("observer proven for a program that may write or redirect: %+v", c)
		}
	})
}

// Registers above r10 (the encoding allows 15) are refused, not indexed:
// the analysis gives up conservatively (a crash the fuzzer found in atomic
// stores).
func TestInvalidRegister(t *testing.T) {
	for _, ins := range []asm.Instruction{
		{OpCode: asm.FetchAdd.OpCode(asm.Word), Dst: asm.R1, Src: asm.Register(12)},
		{OpCode: asm.Mov.Op(asm.RegSource), Dst: asm.Register(11), Src: asm.R1},
		{OpCode: asm.LoadMemOp(asm.Word), Dst: asm.R0, Src: asm.Register(15)},
	} {
		c := analyze.Instructions(ebpf.XDP, asm.Instructions{ins, asm.Return()}, nil)
		if c.ReadOnlyObserver || !c.WritesPacket || !strings.Contains(c.Why[analyze.FactWritesPacket], "could not follow") {
			t.Errorf("%v: %+v", ins, c)
		}
	}
}
