package chain

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

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
	Interface string   `json:"interface"`
	Ifindex   int      `json:"ifindex"`
	Hook      bpf.Hook `json:"hook"`
	Backend   string   `json:"backend"`
	// Reason says why the backend was chosen.
	Reason string `json:"reason,omitempty"`
	Mode   string `json:"mode,omitempty"`
	// RootID is the program attached to the hook (dispatcher or
	// tail-call root); Version the dispatcher protocol version.
	RootID   ebpf.ProgramID  `json:"rootId,omitempty"`
	Version  int             `json:"version,omitempty"`
	Programs []ProgramStatus `json:"programs"`
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

// Status reports the chains on iface (every interface when iface is
// empty), hook by hook. Hooks without a chain are left out.
func (m *Manager) Status(ctx context.Context, iface string) ([]HookStatus, error) {
	st, err := m.state.load()
	if err != nil {
		return nil, err
	}
	var ifaces []string
	if iface != "" {
		ifaces = []string{iface}
	} else {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list interfaces: %w", err)
		}
		for _, l := range links {
			ifaces = append(ifaces, l.Attrs().Name)
		}
		slices.Sort(ifaces)
	}
	out := []HookStatus{}
	for _, ifn := range ifaces {
		for _, h := range bpf.Hooks {
			hs, err := m.hookStatus(ctx, st, ifn, h)
			if err != nil {
				return nil, err
			}
			if hs != nil {
				out = append(out, *hs)
			}
		}
	}
	return out, nil
}

// hookStatus combines the kernel's view of one hook with the host state.
// It returns nil when no backend runs a chain there.
func (m *Manager) hookStatus(ctx context.Context, st *State, iface string, hook bpf.Hook) (*HookStatus, error) {
	t, err := m.target(iface, hook)
	if err != nil {
		return nil, err
	}
	if err := ensureBPFFS(m.bpffs); err != nil {
		return nil, err
	}
	owner, c, err := m.owner(ctx, t)
	if err != nil {
		if errors.Is(err, bpf.ErrForeignProgram) {
			return nil, nil
		}
		return nil, err
	}
	if owner == nil {
		return nil, nil
	}
	hs := &HookStatus{Interface: iface, Ifindex: t.Ifindex, Hook: hook, Backend: owner.Name(), Mode: c.Mode, RootID: c.RootID, Version: c.Version, Programs: []ProgramStatus{}}
	byID := map[ebpf.ProgramID]*ElementState{}
	if old := st.find(iface, hook); old != nil {
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
		} else if owner.Name() == "dispatcher" {
			ps.Origin = OriginLibxdp
		}
		hs.Programs = append(hs.Programs, ps)
	}
	return hs, nil
}
