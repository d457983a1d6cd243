package analyze

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/kfm-project/kfm/bpf"
)

// ErrNoProgram: the collection has no program of the requested name.
var ErrNoProgram = errors.New("no such program")

// Capabilities are the facts kfm computes from a program's instructions:
// what it calls, what it may do to a packet, and what it may return. Every
// "may" is conservative: where the analysis cannot follow a value or a
// call, it assumes the worst (see the package documentation).
//
// The JSON form is what `kfm publish` writes into a bundle's config (field
// "capabilities" of each program) and what `kfm inspect -o json` prints;
// kfm never trusts a bundle's copy for a decision, it computes the facts
// again from the object.
type Capabilities struct {
	// Type is the program type as bpftool spells it (xdp, sched_cls...).
	Type string `json:"type"`
	// Hooks are the hooks kfm can chain the program on.
	Hooks []bpf.Hook `json:"hooks"`
	// Helpers are the helpers called by the program and its subprograms
	// (reachable or not), sorted, spelled as in the kernel's UAPI
	// ("bpf_map_lookup_elem").
	Helpers []string `json:"helpers,omitempty"`
	// Kfuncs are the kernel functions called, sorted.
	Kfuncs []string `json:"kfuncs,omitempty"`
	// MapTypes are the types of the maps the program references, sorted
	// (bpftool names; global-variable sections such as .rodata are not
	// counted).
	MapTypes []string `json:"mapTypes,omitempty"`
	// WritesPacket: the program may change packet bytes (a store through a
	// packet pointer or a pointer the analysis cannot trace, or a helper
	// such as bpf_skb_store_bytes or bpf_l4_csum_replace).
	WritesPacket bool `json:"writesPacket"`
	// AdjustsPacket: the program may move the packet's head, tail or
	// metadata, or change its size or layout (bpf_xdp_adjust_head,
	// bpf_skb_change_tail, bpf_skb_adjust_room...).
	AdjustsPacket bool `json:"adjustsPacket"`
	// Redirects: the program may send the packet elsewhere (bpf_redirect*,
	// bpf_clone_redirect, or a return of XDP_REDIRECT / TC_ACT_REDIRECT).
	Redirects bool `json:"redirects"`
	// WritesContext: the program may change packet metadata outside the
	// packet bytes (stores into the context such as skb->mark, or helpers
	// such as bpf_set_hash and bpf_skb_set_tunnel_key).
	WritesContext bool `json:"writesContext"`
	// TailCalls: the program may tail-call other programs, whose code kfm
	// cannot see; it counts as writing, adjusting and redirecting.
	TailCalls bool `json:"tailCalls,omitempty"`
	// Returns are the verdicts the main function may return (low 32 bits,
	// signed), sorted; set only when ReturnsKnown.
	Returns []int32 `json:"returns,omitempty"`
	// ReturnsKnown: every exit of the main function returns a constant
	// the analysis could follow.
	ReturnsKnown bool `json:"returnsKnown"`
	// ReadOnlyObserver: proven never to write the packet or its metadata,
	// never to adjust it, redirect or tail-call, and to return only "pass"
	// (XDP_PASS; TC_ACT_OK or -1 for tc programs) on every path.
	ReadOnlyObserver bool `json:"readOnlyObserver"`
	// Instructions counts the main function's instructions (kernel
	// instruction slots: a 64-bit immediate load counts two), before kfm
	// adds anything; TotalInstructions includes the subprograms.
	Instructions      int `json:"instructions"`
	TotalInstructions int `json:"totalInstructions"`
	// Why gives, for each of writesPacket, adjustsPacket, redirects,
	// writesContext, tailCalls and readOnlyObserver (when false), the first
	// instruction or reason that decided it.
	Why map[string]string `json:"why,omitempty"`
}

// Fact names used as keys of Capabilities.Why.
const (
	FactWritesPacket     = "writesPacket"
	FactAdjustsPacket    = "adjustsPacket"
	FactRedirects        = "redirects"
	FactWritesContext    = "writesContext"
	FactTailCalls        = "tailCalls"
	FactReadOnlyObserver = "readOnlyObserver"
)

// Program analyses the program called name in spec (its main function and
// the subprograms cilium/ebpf linked into it). spec is only read.
func Program(spec *ebpf.CollectionSpec, name string) (*Capabilities, error) {
	if spec == nil {
		return nil, fmt.Errorf("program %q: no collection: %w", name, ErrNoProgram)
	}
	ps, ok := spec.Programs[name]
	if !ok {
		return nil, fmt.Errorf("program %q: %w", name, ErrNoProgram)
	}
	return Instructions(ps.Type, ps.Instructions, spec.Maps), nil
}

// Instructions analyses a program of type typ given as instructions (main
// function first, then subprograms, as in an ebpf.ProgramSpec). maps
// resolves map references for MapTypes; it may be nil. Any instruction
// stream is accepted: what the analysis cannot follow makes the result
// conservative, with the reason in Why.
func Instructions(typ ebpf.ProgramType, insns asm.Instructions, maps map[string]*ebpf.MapSpec) *Capabilities {
	c := &Capabilities{
		Type:  bpf.ProgramTypeName(typ),
		Hooks: bpf.HooksFor(typ),
		Why:   map[string]string{},
	}
	helpers, kfuncs, mapTypes := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i := range insns {
		ins := &insns[i]
		switch {
		case ins.IsBuiltinCall():
			helpers[HelperName(asm.BuiltinFunc(ins.Constant))] = true
		case ins.IsKfuncCall():
			kfuncs[kfuncName(ins)] = true
		case ins.IsLoadFromMap():
			if m, ok := maps[ins.Reference()]; ok && m != nil && !isGlobalData(ins.Reference()) {
				mapTypes[bpf.MapTypeName(m.Type)] = true
			}
		}
		c.TotalInstructions += int(ins.Width())
	}
	c.Helpers = sortedKeys(helpers)
	c.Kfuncs = sortedKeys(kfuncs)
	c.MapTypes = sortedKeys(mapTypes)

	f := newFlow(typ, insns, c)
	if err := f.run(); err != nil {
		f.unknown(fmt.Sprintf("kfm could not follow the program (%v)", err))
	}
	c.Instructions = f.mainWidth()
	c.finish(typ, f)
	if len(c.Why) == 0 {
		c.Why = nil
	}
	return c
}

// finish derives the return facts and the observer proof.
func (c *Capabilities) finish(typ ebpf.ProgramType, f *flow) {
	if f.failed {
		c.ReturnsKnown = false
	} else if f.exitsSeen && f.exitsConst {
		c.ReturnsKnown = true
		c.Returns = sortedKeys(f.returns)
	}
	redirect, name := int32(-1000), ""
	switch typ {
	case ebpf.XDP:
		redirect, name = 4, "XDP_REDIRECT"
	case ebpf.SchedCLS, ebpf.SchedACT:
		redirect, name = 7, "TC_ACT_REDIRECT"
	}
	if c.ReturnsKnown && slices.Contains(c.Returns, redirect) {
		c.set(&c.Redirects, FactRedirects, "returns "+name)
	}

	var pass []int32
	switch typ {
	case ebpf.XDP:
		pass = []int32{2}
	case ebpf.SchedCLS, ebpf.SchedACT:
		pass = []int32{-1, 0}
	}
	why := ""
	switch {
	case pass == nil:
		why = fmt.Sprintf("kfm knows the pass verdicts of xdp and tc programs only, not of %s", c.Type)
	case c.WritesPacket:
		why = "may write the packet: " + c.Why[FactWritesPacket]
	case c.AdjustsPacket:
		why = "may adjust the packet: " + c.Why[FactAdjustsPacket]
	case c.Redirects:
		why = "may redirect: " + c.Why[FactRedirects]
	case c.WritesContext:
		why = "may write packet metadata: " + c.Why[FactWritesContext]
	case c.TailCalls:
		why = "tail-calls: " + c.Why[FactTailCalls]
	case !c.ReturnsKnown:
		why = "kfm cannot prove what every exit returns" + f.returnWhy()
	default:
		for _, r := range c.Returns {
			if !slices.Contains(pass, r) {
				why = "may return " + verdictName(typ, r)
				break
			}
		}
	}
	if why == "" {
		c.ReadOnlyObserver = true
	} else {
		c.Why[FactReadOnlyObserver] = why
	}
}

// set sets a fact and records the first reason for it.
func (c *Capabilities) set(fact *bool, name, why string) {
	*fact = true
	if _, ok := c.Why[name]; !ok {
		c.Why[name] = why
	}
}

func verdictName(typ ebpf.ProgramType, v int32) string {
	h := bpf.HookXDP
	if typ != ebpf.XDP {
		h = bpf.HookTCIngress
	}
	return bpf.ActionName(h, bpf.Action(v))
}

func kfuncName(ins *asm.Instruction) string {
	if fn := btf.FuncMetadata(ins); fn != nil && fn.Name != "" {
		return fn.Name
	}
	if r := ins.Reference(); r != "" {
		return r
	}
	return fmt.Sprintf("kfunc#%d", ins.Constant)
}

// isGlobalData reports the maps clang makes of global variables.
func isGlobalData(name string) bool {
	for _, p := range []string{".rodata", ".data", ".bss", ".kconfig", ".ksyms"} {
		if name == p || strings.HasPrefix(name, p+".") {
			return true
		}
	}
	return false
}

func sortedKeys[K interface{ ~string | ~int32 }](m map[K]bool) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return nil
	}
	return out
}
