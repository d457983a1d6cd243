package verify

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/analyze"
)

// ErrCapability: the capability policy refuses what a program does (a
// helper, a program type, writing the packet...). The error names the
// program, the capability and the rule.
var ErrCapability = errors.New("refused by the capability policy")

// Capabilities are the limits a policy rule (its `capabilities:` block)
// puts on what an accepted program may do. kfm checks them against its own
// analysis of the object that will load (bpf/analyze), never against what
// a bundle says of itself. Zero values limit nothing.
//
//	capabilities:
//	  programTypes: [xdp]              # bpftool names
//	  hooks: [xdp]                     # xdp, tc-ingress, tc-egress
//	  helpers: [bpf_map_lookup_elem]   # only these helpers (allow-list)
//	  denyHelpers: [bpf_ktime_get_ns]  # never these
//	  allowHelpers: [bpf_trace_printk] # lift the built-in default denies
//	  modifyPackets: false             # no packet writes, no head/tail/meta adjusts
//	  redirect: false                  # no bpf_redirect*, no XDP_REDIRECT/TC_ACT_REDIRECT
//	  maxInstructions: 4096            # main function and subprograms
//	  mapTypes: [array, percpu_array, hash]
//	  readOnlyObserver: true           # proven: no writes, no redirects, returns only pass
//
// Whatever the rule says, the helpers of DefaultDeniedHelpers are refused
// unless the rule lifts them, by name, with allowHelpers or helpers.
type Capabilities struct {
	ProgramTypes     []string `yaml:"programTypes,omitempty" json:"programTypes,omitempty"`
	Hooks            []string `yaml:"hooks,omitempty" json:"hooks,omitempty"`
	Helpers          []string `yaml:"helpers,omitempty" json:"helpers,omitempty"`
	DenyHelpers      []string `yaml:"denyHelpers,omitempty" json:"denyHelpers,omitempty"`
	AllowHelpers     []string `yaml:"allowHelpers,omitempty" json:"allowHelpers,omitempty"`
	ModifyPackets    *bool    `yaml:"modifyPackets,omitempty" json:"modifyPackets,omitempty"`
	Redirect         *bool    `yaml:"redirect,omitempty" json:"redirect,omitempty"`
	MaxInstructions  int      `yaml:"maxInstructions,omitempty" json:"maxInstructions,omitempty"`
	MapTypes         []string `yaml:"mapTypes,omitempty" json:"mapTypes,omitempty"`
	ReadOnlyObserver bool     `yaml:"readOnlyObserver,omitempty" json:"readOnlyObserver,omitempty"`
}

// defaultDenied are the helpers no packet program needs, with why.
var defaultDenied = map[string]string{
	"bpf_probe_read":            "reads arbitrary memory",
	"bpf_probe_read_str":        "reads arbitrary memory",
	"bpf_probe_read_kernel":     "reads arbitrary kernel memory",
	"bpf_probe_read_kernel_str": "reads arbitrary kernel memory",
	"bpf_probe_read_user":       "reads arbitrary user memory",
	"bpf_probe_read_user_str":   "reads arbitrary user memory",
	"bpf_get_current_task":      "exposes the current task",
	"bpf_get_current_task_btf":  "exposes the current task",
	"bpf_per_cpu_ptr":           "reads kernel per-CPU variables",
	"bpf_this_cpu_ptr":          "reads kernel per-CPU variables",
	"bpf_trace_printk":          "writes the shared trace pipe (debugging only)",
	"bpf_trace_vprintk":         "writes the shared trace pipe (debugging only)",
}

// DefaultDeniedHelpers lists, sorted, the helpers every capability check
// refuses unless the rule lifts them (allowHelpers or helpers): packet
// programs never need them, and with CAP_PERFMON they read arbitrary kernel
// or user memory, expose the current task, or write the trace pipe.
func DefaultDeniedHelpers() []string {
	out := make([]string, 0, len(defaultDenied))
	for h := range defaultDenied {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// check validates the rule's names.
func (c *Capabilities) check() error {
	for _, list := range [][]string{c.Helpers, c.DenyHelpers, c.AllowHelpers} {
		for _, h := range list {
			if !strings.HasPrefix(h, "bpf_") {
				return fmt.Errorf("helper %q: spell helpers as the kernel does, with the bpf_ prefix (bpf_map_lookup_elem)", h)
			}
		}
	}
	for _, h := range c.Hooks {
		if _, err := bpf.ParseHook(h); err != nil {
			return err
		}
	}
	if c.MaxInstructions < 0 {
		return fmt.Errorf("maxInstructions %d: must be positive", c.MaxInstructions)
	}
	return nil
}

// CheckCapabilities checks what the program function does (caps, computed
// by kfm from the object that will load) on hook against the policy: the
// capabilities of the rule matching ref, or for a local object file (ref
// "") the policy's localCapabilities. A nil policy, or a reference no rule
// matches (accepted unsigned), gets the built-in default denies only. A
// refusal wraps ErrCapability and names the program, what it does and the
// rule.
func (p *Policy) CheckCapabilities(ref, function string, caps *analyze.Capabilities, hook bpf.Hook) error {
	var rule *Capabilities
	where := "kfm's built-in default (no policy rule)"
	if p != nil {
		switch {
		case ref == "":
			rule = p.Local
			where = p.Source + " (localCapabilities)"
		default:
			if r, err := p.Match(ref); err == nil {
				rule, where = r.Capabilities, r.where(p.Source)
			}
		}
	}
	return checkCapabilities(rule, where, function, caps, hook)
}

func checkCapabilities(rule *Capabilities, where, function string, caps *analyze.Capabilities, hook bpf.Hook) error {
	if caps == nil {
		return fmt.Errorf("%s: no capabilities computed: %w", function, ErrCapability)
	}
	var r Capabilities
	if rule != nil {
		r = *rule
	}
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%s %s, which %s refuses: %w", function, fmt.Sprintf(format, args...), where, ErrCapability)
	}
	for _, h := range caps.Helpers {
		if slices.Contains(r.DenyHelpers, h) {
			return refuse("calls helper %s (denyHelpers)", h)
		}
		if why, ok := defaultDenied[h]; ok && !slices.Contains(r.AllowHelpers, h) && !slices.Contains(r.Helpers, h) {
			return fmt.Errorf("%s calls helper %s, which kfm denies by default (it %s; a packet program has no use for it): lift it with `allowHelpers: [%s]` in the capabilities of %s: %w",
				function, h, why, h, where, ErrCapability)
		}
		if len(r.Helpers) > 0 && !slices.Contains(r.Helpers, h) {
			return refuse("calls helper %s, not among the allowed helpers (%s)", h, strings.Join(r.Helpers, ", "))
		}
	}
	if len(r.ProgramTypes) > 0 && !slices.Contains(r.ProgramTypes, caps.Type) {
		return refuse("is a %s program, not one of the allowed program types (%s)", caps.Type, strings.Join(r.ProgramTypes, ", "))
	}
	if len(r.Hooks) > 0 && hook != "" && !slices.Contains(r.Hooks, string(hook)) {
		return refuse("would run on the %s hook, not one of the allowed hooks (%s)", hook, strings.Join(r.Hooks, ", "))
	}
	if r.ModifyPackets != nil && !*r.ModifyPackets {
		if caps.WritesPacket {
			return refuse("may write the packet (%s; modifyPackets: false)", caps.Why[analyze.FactWritesPacket])
		}
		if caps.AdjustsPacket {
			return refuse("may adjust the packet (%s; modifyPackets: false)", caps.Why[analyze.FactAdjustsPacket])
		}
	}
	if r.Redirect != nil && !*r.Redirect && caps.Redirects {
		return refuse("may redirect packets (%s; redirect: false)", caps.Why[analyze.FactRedirects])
	}
	if r.MaxInstructions > 0 && caps.TotalInstructions > r.MaxInstructions {
		return refuse("has %d instructions, more than maxInstructions %d", caps.TotalInstructions, r.MaxInstructions)
	}
	if len(r.MapTypes) > 0 {
		for _, m := range caps.MapTypes {
			if !slices.Contains(r.MapTypes, m) {
				return refuse("uses a %s map, not one of the allowed map types (%s)", m, strings.Join(r.MapTypes, ", "))
			}
		}
	}
	if r.ReadOnlyObserver && !caps.ReadOnlyObserver {
		return refuse("is not a proven read-only observer (%s; readOnlyObserver: true)", caps.Why[analyze.FactReadOnlyObserver])
	}
	return nil
}
