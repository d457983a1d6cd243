package analyze_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf/analyze"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/testprogs"
)

// Hand-written programs, one behaviour each.
func TestInstructions(t *testing.T) {
	data := asm.LoadMem(asm.R2, asm.R1, 0, asm.Word) // r2 = xdp_md->data
	pass := asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}
	with := func(body ...asm.Instruction) asm.Instructions { return append(body, pass...) }
	for _, tt := range []struct {
		name     string
		typ      ebpf.ProgramType
		insns    asm.Instructions
		writes   bool
		adjusts  bool
		redirect bool
		context  bool
		returns  []int32 // nil: not known
		observer bool
		why      string // substring of the reason the observer proof failed
	}{
		{name: "pass", typ: ebpf.XDP, insns: pass, returns: []int32{2}, observer: true},
		{name: "reads packet", typ: ebpf.XDP, insns: with(data, asm.LoadMem(asm.R3, asm.R2, 0, asm.Byte)), returns: []int32{2}, observer: true},
		{name: "store through packet pointer", typ: ebpf.XDP, insns: with(data, asm.StoreImm(asm.R2, 3, 1, asm.Byte)),
			writes: true, returns: []int32{2}, why: "stores through a packet pointer"},
		{name: "atomic add into packet", typ: ebpf.XDP, insns: with(data, asm.Mov.Imm(asm.R3, 1), asm.Instruction{OpCode: asm.AddAtomic.OpCode(asm.Word), Dst: asm.R2, Src: asm.R3}),
			writes: true, returns: []int32{2}, why: "packet pointer"},
		{name: "packet pointer spilled and reloaded", typ: ebpf.XDP, insns: with(data,
			asm.StoreMem(asm.RFP, -16, asm.R2, asm.DWord),
			asm.Mov.Imm(asm.R2, 0),
			asm.LoadMem(asm.R4, asm.RFP, -16, asm.DWord),
			asm.StoreImm(asm.R4, 0, 7, asm.Byte)),
			writes: true, returns: []int32{2}, why: "packet pointer"},
		{name: "stack store", typ: ebpf.XDP, insns: with(asm.StoreImm(asm.RFP, -8, 1, asm.DWord)), returns: []int32{2}, observer: true},
		{name: "map value store", typ: ebpf.XDP, insns: with(
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, 0),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.StoreImm(asm.R0, 0, 1, asm.DWord),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("out")),
			returns: []int32{2}, observer: true},
		{name: "untraceable pointer", typ: ebpf.XDP, insns: with(asm.LoadMem(asm.R3, asm.RFP, -8, asm.DWord), asm.StoreImm(asm.R3, 0, 1, asm.Byte)),
			writes: true, returns: []int32{2}, why: "cannot trace"},
		{name: "skb_store_bytes", typ: ebpf.SchedCLS, insns: asm.Instructions{asm.FnSkbStoreBytes.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			writes: true, returns: []int32{0}, why: "bpf_skb_store_bytes"},
		{name: "l4_csum_replace", typ: ebpf.SchedCLS, insns: asm.Instructions{asm.FnL4CsumReplace.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			writes: true, returns: []int32{0}, why: "bpf_l4_csum_replace"},
		{name: "skb_load_bytes into the packet", typ: ebpf.SchedCLS, insns: asm.Instructions{
			asm.LoadMem(asm.R3, asm.R1, 76, asm.Word), asm.FnSkbLoadBytes.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			writes: true, returns: []int32{0}, why: "may be into the packet"},
		{name: "skb_load_bytes into the stack", typ: ebpf.SchedCLS, insns: asm.Instructions{
			asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -8), asm.FnSkbLoadBytes.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			returns: []int32{0}, observer: true},
		{name: "adjust head", typ: ebpf.XDP, insns: with(asm.FnXdpAdjustHead.Call()), adjusts: true, returns: []int32{2}, why: "bpf_xdp_adjust_head"},
		{name: "redirect helper", typ: ebpf.XDP, insns: asm.Instructions{asm.FnRedirect.Call(), asm.Return()}, redirect: true, why: "bpf_redirect"},
		{name: "returns XDP_REDIRECT", typ: ebpf.XDP, insns: asm.Instructions{asm.Mov.Imm(asm.R0, 4), asm.Return()}, redirect: true, returns: []int32{4}, why: "XDP_REDIRECT"},
		{name: "returns TC_ACT_REDIRECT", typ: ebpf.SchedCLS, insns: asm.Instructions{asm.Mov.Imm(asm.R0, 7), asm.Return()}, redirect: true, returns: []int32{7}, why: "TC_ACT_REDIRECT"},
		{name: "tc -1 and ok", typ: ebpf.SchedCLS, insns: asm.Instructions{
			asm.Mov.Imm(asm.R0, -1), asm.JEq.Imm(asm.R1, 0, "x"), asm.Mov.Imm32(asm.R0, 0), asm.Return().WithSymbol("x")},
			returns: []int32{-1, 0}, observer: true},
		{name: "skb mark", typ: ebpf.SchedCLS, insns: asm.Instructions{asm.StoreImm(asm.R1, 8, 1, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			context: true, returns: []int32{0}, why: "context"},
		{name: "drop on one path", typ: ebpf.XDP, insns: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), asm.JEq.Imm(asm.R1, 0, "x"), asm.Mov.Imm(asm.R0, 1), asm.Return().WithSymbol("x")},
			returns: []int32{1, 2}, why: "may return drop"},
		{name: "verdict from a map", typ: ebpf.XDP, insns: asm.Instructions{asm.FnGetPrandomU32.Call(), asm.Return()}, why: "computed at run time"},
		{name: "constant arithmetic", typ: ebpf.XDP, insns: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Add.Imm(asm.R0, 1), asm.Return()}, returns: []int32{2}, observer: true},
		{name: "tail call", typ: ebpf.XDP, insns: with(asm.FnTailCall.Call()), writes: true, adjusts: true, redirect: true, context: true, returns: []int32{2}, why: "tail call"},
		{name: "subprogram writes through its packet argument", typ: ebpf.XDP, insns: asm.Instructions{
			data, asm.Mov.Reg(asm.R1, asm.R2), asm.Call.Label("sub"), asm.Mov.Imm(asm.R0, 2), asm.Return(),
			asm.StoreImm(asm.R1, 0, 0, asm.Byte).WithSymbol("sub"), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			writes: true, returns: []int32{2}, why: "packet pointer"},
		{name: "verdict from a subprogram", typ: ebpf.XDP, insns: asm.Instructions{
			asm.Call.Label("sub"), asm.Return(),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("sub"), asm.Return()},
			returns: []int32{2}, observer: true},
		{name: "jump out of the program", typ: ebpf.XDP, insns: asm.Instructions{asm.Ja.Imm(asm.R0, 0, "").WithReference(""), asm.Return()},
			writes: true, adjusts: true, redirect: true, context: true, why: "could not follow"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			insns := tt.insns
			if tt.name == "jump out of the program" {
				insns = slices.Clone(insns)
				insns[0].Offset = 10
			}
			c := analyze.Instructions(tt.typ, insns, nil)
			got := []bool{c.WritesPacket, c.AdjustsPacket, c.Redirects, c.WritesContext, c.ReadOnlyObserver}
			want := []bool{tt.writes, tt.adjusts, tt.redirect, tt.context, tt.observer}
			if !slices.Equal(got, want) {
				t.Errorf("writes, adjusts, redirects, context, observer = %v, want %v (why %v)", got, want, c.Why)
			}
			if tt.returns != nil && (!c.ReturnsKnown || !slices.Equal(c.Returns, tt.returns)) {
				t.Errorf("returns %v (known %v), want %v", c.Returns, c.ReturnsKnown, tt.returns)
			}
			if tt.why != "" && !strings.Contains(c.Why[analyze.FactReadOnlyObserver], tt.why) {
				t.Errorf("observer refused because %q, want it to mention %q", c.Why[analyze.FactReadOnlyObserver], tt.why)
			}
		})
	}
}

// The compiled sample and test programs.
func TestObjects(t *testing.T) {
	for _, tt := range []struct {
		spec     func(string) (*ebpf.CollectionSpec, error)
		name     string
		helpers  []string
		maps     []string
		observer bool
		why      string
	}{
		{programs.Spec, "xdp_count", []string{"bpf_map_lookup_elem"}, []string{"percpu_array"}, true, ""},
		{programs.Spec, "tc_count", []string{"bpf_map_lookup_elem"}, []string{"percpu_array"}, true, ""},
		{programs.Spec, "xdp_portfilter", []string{"bpf_map_lookup_elem"}, []string{"percpu_array"}, false, "may return drop"},
		{programs.Spec, "tc_mark", nil, nil, false, "stores into the context"},
		{testprogs.Spec, "xdp_probe_read", []string{"bpf_probe_read_kernel"}, nil, true, ""},
		{testprogs.Spec, "xdp_buff_len", []string{"bpf_map_lookup_elem", "bpf_xdp_get_buff_len"}, []string{"array"}, true, ""},
		{testprogs.Spec, "xdp_subprog", []string{"bpf_map_lookup_elem"}, []string{"array"}, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := tt.spec(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			c, err := analyze.Program(spec, tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Helpers, tt.helpers) || !slices.Equal(c.MapTypes, tt.maps) {
				t.Errorf("helpers %v, map types %v; want %v, %v", c.Helpers, c.MapTypes, tt.helpers, tt.maps)
			}
			if c.ReadOnlyObserver != tt.observer || !strings.Contains(c.Why[analyze.FactReadOnlyObserver], tt.why) {
				t.Errorf("observer %v (%q), want %v (%q)", c.ReadOnlyObserver, c.Why[analyze.FactReadOnlyObserver], tt.observer, tt.why)
			}
			if c.Instructions == 0 || c.TotalInstructions < c.Instructions {
				t.Errorf("instructions %d, total %d", c.Instructions, c.TotalInstructions)
			}
		})
	}
	spec, _ := testprogs.Spec("xdp_subprog")
	c, _ := analyze.Program(spec, "xdp_subprog")
	if c.TotalInstructions <= c.Instructions {
		t.Errorf("xdp_subprog: total %d instructions, main %d: subprograms not counted", c.TotalInstructions, c.Instructions)
	}
	if _, err := analyze.Program(spec, "nope"); err == nil {
		t.Error("a missing program gave no error")
	}
}

// BenchmarkProgram measures the analysis of the largest sample program
// (xdp_portfilter, about 250 instructions).
func BenchmarkProgram(b *testing.B) {
	spec, err := programs.Spec("xdp_portfilter")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := analyze.Program(spec, "xdp_portfilter"); err != nil {
			b.Fatal(err)
		}
	}
}
