package verify

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/analyze"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/testprogs"
)

func capsOf(t *testing.T, spec func(string) (*ebpf.CollectionSpec, error), name string) *analyze.Capabilities {
	t.Helper()
	s, err := spec(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := analyze.Program(s, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Each knob of a rule's capabilities, on real compiled programs: a policy
// line, a program, and the refusal's wording (empty: accepted).
func TestCapabilityPolicy(t *testing.T) {
	count := capsOf(t, programs.Spec, "xdp_count")
	portfilter := capsOf(t, programs.Spec, "xdp_portfilter")
	ratelimit := capsOf(t, programs.Spec, "xdp_ratelimit")
	mark := capsOf(t, programs.Spec, "tc_mark")
	probe := capsOf(t, testprogs.Spec, "xdp_probe_read")
	for _, tt := range []struct {
		name   string
		rule   string // the localCapabilities block, YAML flow style
		caps   *analyze.Capabilities
		hook   bpf.Hook
		refuse string
	}{
		{"default denies probe_read_kernel", "{}", probe, bpf.HookXDP, "calls helper bpf_probe_read_kernel, which kfm denies by default"},
		{"allowHelpers lifts the default", "{allowHelpers: [bpf_probe_read_kernel]}", probe, bpf.HookXDP, ""},
		{"helpers allow-list lifts the default", "{helpers: [bpf_probe_read_kernel]}", probe, bpf.HookXDP, ""},
		{"clean program accepted", "{}", count, bpf.HookXDP, ""},
		{"denyHelpers", "{denyHelpers: [bpf_ktime_get_ns]}", ratelimit, bpf.HookXDP, "calls helper bpf_ktime_get_ns (denyHelpers)"},
		{"denyHelpers wins over allowHelpers", "{denyHelpers: [bpf_probe_read_kernel], allowHelpers: [bpf_probe_read_kernel]}", probe, bpf.HookXDP, "(denyHelpers)"},
		{"helpers allow-list refuses others", "{helpers: [bpf_map_lookup_elem]}", ratelimit, bpf.HookXDP, "calls helper bpf_ktime_get_ns, not among the allowed helpers"},
		{"helpers allow-list accepts", "{helpers: [bpf_map_lookup_elem]}", count, bpf.HookXDP, ""},
		{"programTypes refuses", "{programTypes: [sched_cls]}", count, bpf.HookXDP, "is a xdp program, not one of the allowed program types (sched_cls)"},
		{"programTypes accepts", "{programTypes: [xdp, sched_cls]}", count, bpf.HookXDP, ""},
		{"hooks refuses", "{hooks: [tc-ingress]}", mark, bpf.HookTCEgress, "would run on the tc-egress hook"},
		{"hooks accepts", "{hooks: [tc-egress]}", mark, bpf.HookTCEgress, ""},
		{"modifyPackets false accepts a reader", "{modifyPackets: false}", portfilter, bpf.HookXDP, ""},
		{"redirect false accepts a dropper", "{redirect: false}", portfilter, bpf.HookXDP, ""},
		{"maxInstructions refuses", "{maxInstructions: 100}", count, bpf.HookXDP, "has 208 instructions, more than maxInstructions 100"},
		{"maxInstructions accepts", "{maxInstructions: 1000}", count, bpf.HookXDP, ""},
		{"mapTypes refuses", "{mapTypes: [percpu_array]}", ratelimit, bpf.HookXDP, "uses a lru_hash map"},
		{"mapTypes accepts", "{mapTypes: [percpu_array, lru_hash]}", ratelimit, bpf.HookXDP, ""},
		{"observer accepts xdp_count", "{readOnlyObserver: true}", count, bpf.HookXDP, ""},
		{"observer refuses the port filter", "{readOnlyObserver: true}", portfilter, bpf.HookXDP, "is not a proven read-only observer (may return drop"},
		{"observer refuses skb->mark writes", "{readOnlyObserver: true}", mark, bpf.HookTCIngress, "may write packet metadata"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy(context.Background(), "policy.yaml", []byte("version: 1\nrules:\n  - {match: x/y, deny: true}\nlocalCapabilities: "+tt.rule+"\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			err = p.CheckCapabilities("", "prog", tt.caps, tt.hook)
			switch {
			case tt.refuse == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.refuse != "" && (err == nil || !errors.Is(err, ErrCapability) || !strings.Contains(err.Error(), tt.refuse)):
				t.Fatalf("got %v, want a refusal (ErrCapability) saying %q", err, tt.refuse)
			}
		})
	}
}

// Synthetic facts for the knobs no compiled program here triggers.
func TestCapabilityPolicyWritesAndRedirects(t *testing.T) {
	no := false
	writer := &analyze.Capabilities{Type: "xdp", WritesPacket: true, Why: map[string]string{analyze.FactWritesPacket: "instruction 3 stores through a packet pointer"}}
	adjuster := &analyze.Capabilities{Type: "xdp", AdjustsPacket: true, Why: map[string]string{analyze.FactAdjustsPacket: "instruction 1 calls bpf_xdp_adjust_head"}}
	redirector := &analyze.Capabilities{Type: "xdp", Redirects: true, Why: map[string]string{analyze.FactRedirects: "instruction 1 calls bpf_redirect"}}
	for _, tt := range []struct {
		rule   Capabilities
		caps   *analyze.Capabilities
		refuse string
	}{
		{Capabilities{ModifyPackets: &no}, writer, "may write the packet (instruction 3 stores through a packet pointer; modifyPackets: false)"},
		{Capabilities{ModifyPackets: &no}, adjuster, "may adjust the packet (instruction 1 calls bpf_xdp_adjust_head"},
		{Capabilities{Redirect: &no}, redirector, "may redirect packets (instruction 1 calls bpf_redirect; redirect: false)"},
		{Capabilities{}, writer, ""},
		{Capabilities{ModifyPackets: &no}, redirector, ""},
	} {
		p := &Policy{Source: "policy.yaml", Rules: []Rule{{Match: "registry.example.com/**", Line: 3, Capabilities: &tt.rule}}}
		err := p.CheckCapabilities("registry.example.com/net/prog:1.0", "prog", tt.caps, bpf.HookXDP)
		if tt.refuse == "" {
			if err != nil {
				t.Errorf("%+v: refused: %v", tt.rule, err)
			}
			continue
		}
		if !errors.Is(err, ErrCapability) || !strings.Contains(err.Error(), tt.refuse) || !strings.Contains(err.Error(), "policy.yaml:3 (registry.example.com/**)") {
			t.Errorf("%+v: got %v, want a refusal naming %q and the rule", tt.rule, err, tt.refuse)
		}
	}
}

func TestCapabilityPolicyMalformed(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"localCapabilities: {helpers: [probe_read]}", "with the bpf_ prefix"},
		{"localCapabilities: {hooks: [egress]}", "egress"},
		{"localCapabilities: {maxInstructions: -1}", "must be positive"},
		{"localCapabilities: {writes: false}", "writes"},
	} {
		_, err := ParsePolicy(context.Background(), "policy.yaml", []byte("version: 1\nrules:\n  - {match: x/y, deny: true}\n"+tt.yaml+"\n"), t.TempDir())
		if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want ErrPolicy mentioning %q", tt.yaml, err, tt.want)
		}
	}
	_, err := ParsePolicy(context.Background(), "policy.yaml", []byte("version: 1\nrules:\n  - {match: x/y, deny: true, capabilities: {redirect: false}}\n"), t.TempDir())
	if !errors.Is(err, ErrPolicy) {
		t.Errorf("deny rule with capabilities: got %v", err)
	}
}
