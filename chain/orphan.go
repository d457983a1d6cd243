package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/xdp"
)

// An orphaned chain is one of kfm's that still runs on an XDP hook although
// no backend can read it any more: its pins are gone (the BPF filesystem
// was unmounted, or someone removed <bpffs>/kfm by hand). An XDP program
// attached through netlink holds itself, its program array and every
// program in it, so the chain keeps running without its pins; without them
// the backends take its root for another tool's program. The host state
// recorded the root's program ID when kfm attached it (HookState.RootID):
// a hook whose attached program has that ID is kfm's orphan, and the next
// apply replaces it atomically, as it replaces another backend's chain on a
// backend switch (bpf.PrepareOptions.Replace), or detaches it when the hook
// should run nothing.
//
// TCX links and the links of the tc backend live only as long as their
// pins: with the pins their programs are detached, and the next apply finds
// the hook empty and installs the chain again (classic cls_bpf filters that
// remain are recognised by the tc backend by their names and removed).

// orphanRoot returns the chain kfm left running on ifc's XDP hook without
// pins, as a chain to replace, or nil when the hook runs no such program.
func (m *Manager) orphanRoot(ifc iface, old *HookState) *bpf.Chain {
	if old == nil || old.RootID == 0 || ifc.Hook != bpf.HookXDP {
		return nil
	}
	var a xdp.Attachment
	err := inNetns(ifc.ns.path, func() (err error) {
		a, err = xdp.Query(ifc.Ifindex)
		return err
	})
	if err != nil || a.ProgramID == 0 || a.ProgramID != old.RootID {
		return nil
	}
	return &bpf.Chain{Target: ifc.Target, Backend: old.Backend, RootID: a.ProgramID, Mode: string(a.Mode), Programs: []bpf.ChainProgram{}}
}

// lostPins explains a hook that the host state says runs kfm's programs but
// that no backend can read: what is left and how to repair it.
func (m *Manager) lostPins(ifc iface, old *HookState) string {
	names := ""
	for i, e := range old.Elements {
		if i > 0 {
			names += ", "
		}
		names += e.Name
	}
	where := filepath.Join(m.bpffs, "kfm")
	why := "its pins under " + where + " are gone (removed by hand, or the BPF filesystem at " + m.bpffs + " was unmounted)"
	if _, err := os.Stat(where); errors.Is(err, fs.ErrNotExist) {
		why = "the BPF filesystem at " + m.bpffs + " holds no pins of kfm (was it unmounted?)"
	}
	if o := m.orphanRoot(ifc, old); o != nil {
		return fmt.Sprintf("kfm's %s chain (%s) still runs here from its root program %d, but %s: kfm can no longer change it in place; run `kfm apply --locked` to replace it with a fresh copy (its maps start empty)",
			old.Backend, names, o.RootID, why)
	}
	return fmt.Sprintf("kfm ran %s here on %s, but %s and the chain no longer runs as kfm installed it; run `kfm apply --locked` to install it again (its maps start empty)",
		names, old.Backend, why)
}

// orphanDetach is the change that takes an orphaned XDP root off its hook
// when the hook should run nothing.
type orphanDetach struct {
	ns        *namespace
	ifindex   int
	mode      xdp.Mode
	prog      *ebpf.Program
	committed bool
}

func newOrphanDetach(ifc bpf.Target, ns *namespace, o *bpf.Chain) (*orphanDetach, error) {
	mode, err := xdp.ParseMode(o.Mode)
	if err != nil {
		return nil, err
	}
	p, err := ebpf.NewProgramFromID(o.RootID)
	if err != nil {
		return nil, fmt.Errorf("%s: open kfm's orphaned root program %d: %w", ifc, o.RootID, err)
	}
	return &orphanDetach{ns: ns, ifindex: ifc.Ifindex, mode: mode, prog: p}, nil
}

func (d *orphanDetach) Commit(ctx context.Context) error {
	err := inNetns(d.ns.path, func() error { return xdp.Replace(d.ifindex, nil, d.prog, d.mode) })
	if errors.Is(err, xdp.ErrChanged) {
		return fmt.Errorf("%w: %w", bpf.ErrConflict, err)
	}
	d.committed = err == nil
	return err
}

func (d *orphanDetach) Revert(ctx context.Context) error {
	if !d.committed {
		return nil
	}
	return inNetns(d.ns.path, func() error { return xdp.Replace(d.ifindex, d.prog, nil, d.mode) })
}

func (d *orphanDetach) Programs() []bpf.ChainProgram { return nil }

func (d *orphanDetach) Close() error { return d.prog.Close() }
