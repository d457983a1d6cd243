package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
)

// Origins of programs in a chain.
const (
	OriginKFM    = "kfm"
	OriginLibxdp = "libxdp" // loaded into a dispatcher by another tool
	OriginOther  = "unknown"
)

// HookStatus is what runs on one hook, as `kfm status` shows it.
type HookStatus struct {
	// Netns is the interface's network namespace ("" for the host).
	Netns     string   `json:"netns,omitempty"`
	Interface string   `json:"interface"`
	Ifindex   int      `json:"ifindex"`
	Hook      bpf.Hook `json:"hook"`
	Backend   string   `json:"backend"`
	// Reason says why the backend was chosen.
	Reason string `json:"reason,omitempty"`
	Mode   string `json:"mode,omitempty"`
	// RootID is the program attached to the hook ahead of the chain
	// (dispatcher, tail-call root, or the gate of tcx and tc; the gate
	// changes with every change of the chain); Version the dispatcher
	// protocol version.
	RootID   ebpf.ProgramID  `json:"rootId,omitempty"`
	Version  int             `json:"version,omitempty"`
	Programs []ProgramStatus `json:"programs"`
	// Drift lists the differences between what runs and what kfm.lock
	// pins; empty when they agree.
	Drift []string `json:"drift,omitempty"`
	// Owner is the kfm agent's owner of the chain (see
	// HookState.Owner); empty for kfm.yaml's chains.
	Owner string `json:"owner,omitempty"`
}

// ProgramStatus is one program of a chain, in run order.
type ProgramStatus struct {
	Position  int            `json:"position"`
	Name      string         `json:"name"`
	Priority  int            `json:"priority"`
	ProceedOn []string       `json:"proceedOn"`
	ProgramID ebpf.ProgramID `json:"programId"`
	Tag       string         `json:"tag"`
	Origin    string         `json:"origin"`
	// Source, Function and Params are known for kfm's programs.
	Source   string            `json:"source,omitempty"`
	Digest   string            `json:"digest,omitempty"`
	Function string            `json:"function,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
}

// Status is StatusIn for the host's network namespace.
func (m *Manager) Status(ctx context.Context, iface string) ([]HookStatus, error) {
	return m.StatusIn(ctx, "", iface)
}

// StatusIn reports the chains on iface (every interface when iface is
// empty) in the network namespace netns ("" for the host, else a NAME or
// path as for --netns), hook by hook. Hooks without a chain are left out.
// With neither netns nor iface it also reports the chains of every other
// namespace that the host state or kfm.lock names. Unless another kfm holds
// the host lock, it first prunes the state of interfaces that no longer
// exist (see Prune).
func (m *Manager) StatusIn(ctx context.Context, netns, iface string) ([]HookStatus, error) {
	netnsPath, err := NetnsPath(netns)
	if err != nil {
		return nil, err
	}
	defer m.beginView()()
	if err := m.ensureBPFFS(); err != nil {
		return nil, err
	}
	var st *State
	if l, err := acquireLock(ctx, m.state.dir, time.Nanosecond, nil); err == nil {
		st, err = m.state.load()
		if err == nil {
			m.pruneFirst(st) // (updates st as it saves it)
		}
		l.release()
		if err != nil {
			return nil, err
		}
	} else if st, err = m.state.load(); err != nil {
		return nil, err
	}
	// (kfm.yaml is not needed: drift is against the lock.)
	lk, err := m.loadLock()
	if errors.Is(err, fs.ErrNotExist) {
		lk, err = &Lock{Version: LockVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	out, err := m.statusOf(ctx, st, lk, netnsPath, iface)
	if err != nil || netnsPath != "" || iface != "" {
		return out, err
	}
	var others []string
	for _, hs := range st.Hooks {
		others = append(others, hs.Netns)
	}
	for _, lc := range lk.Chains {
		others = append(others, lc.NetnsPath())
	}
	slices.Sort(others)
	for _, ns := range slices.Compact(others) {
		if ns == "" {
			continue
		}
		more, err := m.statusOf(ctx, st, lk, ns, "")
		if errors.Is(err, ErrNoNetns) {
			for _, lc := range lk.Chains {
				if lc.NetnsPath() == ns {
					out = append(out, HookStatus{Netns: ns, Interface: lc.Interface, Hook: lc.Hook, Programs: []ProgramStatus{}, Drift: []string{"network namespace " + ns + " does not exist"}})
				}
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

// statusOf is StatusIn for one namespace.
func (m *Manager) statusOf(ctx context.Context, st *State, lk *Lock, netnsPath, iface string) ([]HookStatus, error) {
	var ifaces []string
	if iface != "" {
		ifaces = []string{iface}
	} else {
		ns, err := m.namespace(netnsPath)
		if err != nil {
			return nil, err
		}
		links, err := m.links(ns)
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			ifaces = append(ifaces, l.Attrs().Name)
		}
		slices.Sort(ifaces)
	}
	var (
		found  []*HookStatus
		locked []*LockedChain
		checks []pinCheck
	)
	for _, ifn := range ifaces {
		for _, h := range bpf.Hooks {
			hs, err := m.hookStatusOf(ctx, st, netnsPath, ifn, h, &checks)
			if err != nil {
				return nil, err
			}
			lc := lk.ChainIn(netnsPath, ifn, h)
			if hs == nil && lc != nil {
				hs = &HookStatus{Netns: netnsPath, Interface: ifn, Hook: h, Programs: []ProgramStatus{}}
			}
			if hs != nil {
				found, locked = append(found, hs), append(locked, lc)
			}
		}
	}
	m.checkPins(ctx, checks)
	out := make([]HookStatus, 0, len(found))
	for i, hs := range found {
		hs.Drift = append(hs.Drift, drift(hs, locked[i])...)
		out = append(out, *hs)
	}
	if iface == "" {
		for _, lc := range lk.Chains {
			if lc.NetnsPath() == netnsPath && !slices.Contains(ifaces, lc.Interface) {
				out = append(out, HookStatus{Netns: netnsPath, Interface: lc.Interface, Hook: lc.Hook, Programs: []ProgramStatus{}, Drift: []string{"interface " + lc.Interface + " does not exist"}})
			}
		}
	}
	return out, nil
}

// HookStatus reports what runs on one hook from the kernel and the host
// state alone (no drift against kfm.lock, which a node agent does not
// use). It returns nil when no chain runs there.
// netns is a network namespace path as NetnsPath gives it ("" for kfm's own).
func (m *Manager) HookStatus(ctx context.Context, netns, iface string, hook bpf.Hook) (*HookStatus, error) {
	defer m.beginView()()
	st, err := m.state.load()
	if err != nil {
		return nil, err
	}
	return m.hookStatus(ctx, st, netns, iface, hook)
}

// drift compares a hook's running chain with its locked chain.
func drift(hs *HookStatus, lc *LockedChain) []string {
	var out []string
	var running []string
	byName := map[string]ProgramStatus{}
	for _, p := range hs.Programs {
		if p.Origin == OriginKFM {
			running = append(running, p.Name)
			byName[p.Name] = p
		}
	}
	if lc == nil {
		if len(running) > 0 {
			// (Left by an interrupted change, or kfm.lock edited by
			// hand: kfm remove NAME takes such a program off.)
			out = append(out, "not in kfm.lock: "+strings.Join(running, ", ")+" (kfm remove NAME takes it off)")
		}
		return out
	}
	var locked []string
	for _, lp := range lc.Programs {
		locked = append(locked, lp.Name)
		p, ok := byName[lp.Name]
		switch {
		case !ok:
			out = append(out, lp.Name+" is locked but not running")
		case lp.Digest != "" && p.Digest != lp.Digest:
			out = append(out, fmt.Sprintf("%s runs %s, kfm.lock pins %s", lp.Name, orNone(p.Digest), lp.Digest))
		case p.Priority != lp.Priority:
			out = append(out, fmt.Sprintf("%s runs at priority %d, kfm.lock says %d", lp.Name, p.Priority, lp.Priority))
		}
	}
	for _, n := range running {
		if !slices.Contains(locked, n) {
			out = append(out, n+" runs but is not in kfm.lock")
		}
	}
	if len(out) == 0 && !slices.Equal(running, locked) {
		out = append(out, "order differs from kfm.lock: running "+strings.Join(running, ", ")+"; locked "+strings.Join(locked, ", "))
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "no digest"
	}
	return s
}

// hookStatus combines the kernel's view of one hook with the host state.
// It returns nil when no backend runs a chain there.
func (m *Manager) hookStatus(ctx context.Context, st *State, netnsPath, iface string, hook bpf.Hook) (*HookStatus, error) {
	var checks []pinCheck
	hs, err := m.hookStatusOf(ctx, st, netnsPath, iface, hook, &checks)
	if err != nil {
		return nil, err
	}
	m.checkPins(ctx, checks)
	return hs, nil
}

// hookStatusOf is hookStatus without the check of each kfm program's map
// pins, which costs most: it appends that to checks, so that a caller that
// reads many hooks runs them all at once (checkPins).
func (m *Manager) hookStatusOf(ctx context.Context, st *State, netnsPath, iface string, hook bpf.Hook, checks *[]pinCheck) (*HookStatus, error) {
	ifc, err := m.target(netnsPath, iface, hook)
	if err != nil {
		return nil, err
	}
	t := ifc.Target
	if err := m.ensureBPFFS(); err != nil {
		return nil, err
	}
	old := st.find(netnsPath, iface, hook)
	prefer := ""
	if old != nil {
		prefer = old.Backend
	}
	owner, c, err := m.owner(ctx, ifc.ns, t, prefer)
	if err != nil && !errors.Is(err, bpf.ErrForeignProgram) {
		return nil, err
	}
	if owner == nil {
		// No backend reads a chain here. If the host state says kfm's
		// programs run here, their pins are gone: say so.
		if old := st.find(netnsPath, iface, hook); old != nil && len(old.Elements) > 0 && sameInterface(old, ifc) {
			return &HookStatus{Netns: netnsPath, Interface: iface, Ifindex: t.Ifindex, Hook: hook, Owner: old.Owner,
				Programs: []ProgramStatus{}, Drift: []string{m.lostPins(ifc, old)}}, nil
		}
		return nil, nil
	}
	hs := &HookStatus{Netns: netnsPath, Interface: iface, Ifindex: t.Ifindex, Hook: hook, Backend: owner.Name(), Mode: c.Mode, RootID: c.RootID, Version: c.Version, Programs: []ProgramStatus{}}
	byID := map[ebpf.ProgramID]*ElementState{}
	if old != nil && sameInterface(old, ifc) {
		hs.Owner = old.Owner
		if old.Backend == owner.Name() {
			hs.Reason = old.Reason
		}
		for _, e := range old.Elements {
			byID[e.ProgramID] = e
		}
		for _, pe := range old.Pending {
			if _, ok := byID[pe.ProgramID]; !ok {
				byID[pe.ProgramID] = &ElementState{Name: pe.Name, Key: pe.Key}
			}
		}
	}
	for i, cp := range c.Programs {
		ps := ProgramStatus{
			Position: i, Name: cp.Name, Priority: cp.Priority, ProceedOn: cp.ProceedOn.Names(hook),
			ProgramID: cp.ID, Tag: cp.Tag, Origin: OriginOther,
		}
		if e, ok := byID[cp.ID]; ok && cp.ID != 0 {
			ps.Name, ps.Origin = e.Name, OriginKFM
			ps.Source, ps.Digest, ps.Function, ps.Params = e.Source, e.Digest, e.Function, e.Params
			*checks = append(*checks, pinCheck{hs: hs, target: t, element: e.Name, id: cp.ID})
		} else if owner.Name() == "dispatcher" {
			ps.Origin = OriginLibxdp
		}
		hs.Programs = append(hs.Programs, ps)
	}
	return hs, nil
}

// pinCheck is the check of the map pins of one kfm program of a chain
// (see mapStore.unpinnedDrift) that hookStatus leaves to checkPins.
type pinCheck struct {
	hs      *HookStatus
	target  bpf.Target
	element string
	id      ebpf.ProgramID
	drift   string
}

// checkPins runs checks, on as many goroutines as Go runs threads (the
// reads are system calls about objects in bpffs and the kernel, which no
// network namespace changes), and adds what they find to the drift of
// their hooks: in the hook's program order, ahead of anything else.
func (m *Manager) checkPins(ctx context.Context, checks []pinCheck) {
	forEach(ctx, len(checks), func(i int) {
		c := &checks[i]
		names, _ := m.unpinned(c.target, c.element, c.id)
		c.drift = m.maps.unpinnedDrift(c.target, c.element, names)
	})
	m.savePinMarks()
	for _, c := range checks {
		if c.drift != "" {
			c.hs.Drift = append(c.hs.Drift, c.drift)
		}
	}
}
