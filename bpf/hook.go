package bpf

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
)

// Hook is where a chain runs: the XDP hook or one direction of the TC hook.
type Hook string

// The hooks kfm chains programs on.
const (
	HookXDP       Hook = "xdp"
	HookTCIngress Hook = "tc-ingress"
	HookTCEgress  Hook = "tc-egress"
)

// Hooks lists every hook in a stable order.
var Hooks = []Hook{HookXDP, HookTCIngress, HookTCEgress}

// ParseHook parses a hook name as written on the command line and in
// kfm.yaml.
func ParseHook(s string) (Hook, error) {
	for _, h := range Hooks {
		if strings.EqualFold(s, string(h)) {
			return h, nil
		}
	}
	return "", fmt.Errorf("unknown hook %q: use one of xdp, tc-ingress, tc-egress", s)
}

// IsTC reports whether h is one of the TC hooks.
func (h Hook) IsTC() bool { return h == HookTCIngress || h == HookTCEgress }

func (h Hook) String() string { return string(h) }

// TCXAttachType is the TCX attach type of a TC hook (ingress for any hook
// but tc-egress).
func (h Hook) TCXAttachType() ebpf.AttachType {
	if h == HookTCEgress {
		return ebpf.AttachTCXEgress
	}
	return ebpf.AttachTCXIngress
}
