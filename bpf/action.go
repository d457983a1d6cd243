package bpf

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Action is a program's verdict: an XDP action (XDP_PASS...) on the XDP hook,
// a TC action (TC_ACT_OK...) on the TC hooks.
type Action int32

// XDP verdicts.
const (
	XDPAborted  Action = 0
	XDPDrop     Action = 1
	XDPPass     Action = 2
	XDPTx       Action = 3
	XDPRedirect Action = 4
)

// TC verdicts. TCUnspec (-1) is also TCX_NEXT: "go on to the next program".
const (
	TCUnspec     Action = -1
	TCOK         Action = 0
	TCReclassify Action = 1
	TCShot       Action = 2
	TCPipe       Action = 3
	TCStolen     Action = 4
	TCQueued     Action = 5
	TCRepeat     Action = 6
	TCRedirect   Action = 7
	TCTrap       Action = 8
)

type actionName struct {
	name string
	act  Action
}

// Lower-case names as the tools users know spell them (xdp-loader's
// "pass", tc's "ok", "shot").
var (
	xdpActionNames = []actionName{
		{"aborted", XDPAborted}, {"drop", XDPDrop}, {"pass", XDPPass},
		{"tx", XDPTx}, {"redirect", XDPRedirect},
	}
	tcActionNames = []actionName{
		{"unspec", TCUnspec}, {"ok", TCOK}, {"reclassify", TCReclassify},
		{"shot", TCShot}, {"pipe", TCPipe}, {"stolen", TCStolen},
		{"queued", TCQueued}, {"repeat", TCRepeat}, {"redirect", TCRedirect},
		{"trap", TCTrap},
	}
)

func actionNames(h Hook) []actionName {
	if h.IsTC() {
		return tcActionNames
	}
	return xdpActionNames
}

// ActionName is the lower-case name of a verdict on hook h, or its number
// when it has no name.
func ActionName(h Hook, a Action) string {
	for _, n := range actionNames(h) {
		if n.act == a {
			return n.name
		}
	}
	return strconv.Itoa(int(a))
}

// ParseAction parses one verdict name ("pass", "XDP_PASS", "ok", "TC_ACT_OK")
// or number for hook h.
func ParseAction(h Hook, s string) (Action, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(t, "xdp_")
	t = strings.TrimPrefix(t, "tc_act_")
	for _, n := range actionNames(h) {
		if n.name == t {
			return n.act, nil
		}
	}
	var names []string
	for _, n := range actionNames(h) {
		names = append(names, n.name)
	}
	return 0, fmt.Errorf("unknown %s verdict %q: use one of %s", hookFamily(h), s, strings.Join(names, ", "))
}

func hookFamily(h Hook) string {
	if h.IsTC() {
		return "TC"
	}
	return "XDP"
}

// Actions is a set of verdicts, kept sorted and without duplicates.
type Actions []Action

// ParseActions parses a comma-separated list of verdict names for hook h.
func ParseActions(h Hook, s string) (Actions, error) {
	var as Actions
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		a, err := ParseAction(h, f)
		if err != nil {
			return nil, err
		}
		as = append(as, a)
	}
	if len(as) == 0 {
		return nil, fmt.Errorf("empty verdict list %q", s)
	}
	return as.normalize(), nil
}

func (as Actions) normalize() Actions {
	out := slices.Clone(as)
	slices.Sort(out)
	return slices.Compact(out)
}

// Contains reports whether a is in the set.
func (as Actions) Contains(a Action) bool { return slices.Contains(as, a) }

// Names returns the lower-case names of the verdicts for hook h.
func (as Actions) Names(h Hook) []string {
	names := make([]string, 0, len(as))
	for _, a := range as {
		names = append(names, ActionName(h, a))
	}
	return names
}

// XDPMask returns the set as libxdp's chain_call_actions bitmap (bit n set =
// continue after verdict n). Verdicts outside 0..30 are ignored.
func (as Actions) XDPMask() uint32 {
	var m uint32
	for _, a := range as {
		if a >= 0 && a < 31 {
			m |= 1 << uint(a)
		}
	}
	return m
}

// ActionsFromXDPMask is the inverse of XDPMask. Bit 31 (libxdp's
// XDP_DISPATCHER_RETVAL marker) is not a verdict and is dropped.
func ActionsFromXDPMask(m uint32) Actions {
	var as Actions
	for i := 0; i < 31; i++ {
		if m&(1<<uint(i)) != 0 {
			as = append(as, Action(i))
		}
	}
	return as
}

// DefaultProceedOn is the verdict on which a packet goes on to the next
// program when nothing else is configured: XDP_PASS for XDP, TC_ACT_OK for TC.
func DefaultProceedOn(h Hook) Actions {
	if h.IsTC() {
		return Actions{TCOK}
	}
	return Actions{XDPPass}
}
