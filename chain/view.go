package chain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/xdp"
)

// view is what one operation of a Manager (a status, a snapshot, the
// planning of an apply) reads from the kernel once and then looks up for
// every hook, so that its cost per hook is a few system calls and not a
// netlink socket per request:
//
//   - the links of each network namespace, from one netlink dump each
//     (after the first few, which are asked for one by one: see
//     viewLinks): names, ifindexes, hardware addresses and what every XDP
//     hook runs (IFLA_XDP), which tells which XDP hooks run nothing at all
//     and is handed to the backends instead of one query per hook and
//     backend (xdp.WithKnown);
//   - what owner found on each hook, so that an apply that plans every
//     hook twice (describe, then apply) reads each hook once.
//
// A view holds while nothing changes the hooks: apply drops it before it
// plans again after a conflict and once it has committed (refreshView),
// and an operation that began it ends it (beginView). Without a view,
// target and owner ask the kernel each time, as before.
type view struct {
	links  map[string]*viewLinks // by namespace path
	owners map[viewKey]viewOwner
}

type viewLinks struct {
	ns      *namespace
	byName  map[string]netlink.Link
	byIndex linkDump
	dumped  bool // byIndex and byName hold every link
	asked   int  // links asked for one by one so far
}

type viewKey struct {
	netns   string // namespace key
	ifindex int
	hook    bpf.Hook
}

type viewOwner struct {
	backend Backend
	chain   *bpf.Chain
	err     error // nil, or wrapping bpf.ErrForeignProgram
}

func newView() *view {
	return &view{links: map[string]*viewLinks{}, owners: map[viewKey]viewOwner{}}
}

// beginView starts a view for the operation that calls it (unless one is
// running already) and returns the function that ends it.
func (m *Manager) beginView() (end func()) {
	if m.view != nil {
		return func() {}
	}
	m.view = newView()
	return func() { m.view = nil }
}

// refreshView forgets what the running view read: the hooks changed (or
// may have).
func (m *Manager) refreshView() {
	if m.view != nil {
		m.view = newView()
	}
}

// viewLinks returns the view's links of ns (nil without a view). It reads
// them lazily: the first few links an operation asks for by one netlink
// request each (see maxLinkRequests), then all of them by one dump, so
// that an operation on one hook of a host with hundreds of interfaces does
// not dump them all, and one on every hook dumps them once.
func (m *Manager) viewLinks(ns *namespace) (*viewLinks, error) {
	if m.view == nil {
		return nil, nil
	}
	if vl, ok := m.view.links[ns.path]; ok {
		return vl, nil
	}
	vl := &viewLinks{ns: ns, byName: map[string]netlink.Link{}, byIndex: linkDump{}}
	m.view.links[ns.path] = vl
	return vl, nil
}

// all returns every link of the namespace, dumping them on first use.
func (vl *viewLinks) all(m *Manager) (linkDump, error) {
	if !vl.dumped {
		d, err := m.dump(vl.ns)
		if err != nil {
			return nil, err
		}
		vl.byIndex = d
		vl.byName = make(map[string]netlink.Link, len(d))
		for _, l := range d {
			vl.byName[l.Attrs().Name] = l
		}
		vl.dumped = true
	}
	return vl.byIndex, nil
}

// lookup finds a link by name (name != "") or index: from what the view
// holds, else by one request while few were asked for, else from a dump.
// A missing link is (nil, false, nil).
func (vl *viewLinks) lookup(m *Manager, name string, index int) (netlink.Link, bool, error) {
	find := func() (netlink.Link, bool) {
		if name != "" {
			l, ok := vl.byName[name]
			return l, ok
		}
		l, ok := vl.byIndex[index]
		return l, ok
	}
	if l, ok := find(); ok || vl.dumped {
		return l, ok, nil
	}
	if vl.asked >= maxLinkRequests {
		if _, err := vl.all(m); err != nil {
			return nil, false, err
		}
		l, ok := find()
		return l, ok, nil
	}
	vl.asked++
	h, err := vl.ns.handle()
	if err != nil {
		return nil, false, err
	}
	defer h.Close()
	var l netlink.Link
	if name != "" {
		l, err = h.LinkByName(name)
	} else {
		l, err = h.LinkByIndex(index)
	}
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound), errors.Is(err, unix.ENODEV):
		return nil, false, nil
	case err != nil:
		what := name
		if what == "" {
			what = strconv.Itoa(index)
		}
		return nil, false, fmt.Errorf("interface %s of network namespace %s: %w", what, orHost(vl.ns.path), err)
	}
	vl.byName[l.Attrs().Name] = l
	vl.byIndex[l.Attrs().Index] = l
	return l, true, nil
}

// links lists the links of ns: from the view when one runs.
func (m *Manager) links(ns *namespace) ([]netlink.Link, error) {
	vl, err := m.viewLinks(ns)
	if err != nil {
		return nil, err
	}
	if vl != nil {
		d, err := vl.all(m)
		if err != nil {
			return nil, err
		}
		return mapsValues(d), nil
	}
	h, err := ns.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	return links, nil
}

// link finds the link called name in ns: in the view when one runs, else
// with a netlink request. A missing link is a netlink.LinkNotFoundError.
func (m *Manager) link(ns *namespace, name string) (netlink.Link, error) {
	vl, err := m.viewLinks(ns)
	if err != nil {
		return nil, err
	}
	if vl != nil {
		l, ok, err := vl.lookup(m, name, 0)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, netlink.LinkNotFoundError{}
		}
		return l, nil
	}
	h, err := ns.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.LinkByName(name)
}

// owner finds the backend whose chain runs on t, if any. A foreign program
// that no backend claims is reported as an error wrapping
// bpf.ErrForeignProgram. The backend returned runs its calls in ns.
// prefer names the backend the host state records for the hook ("" for
// none): it is asked first, so that a hook of kfm's is read by one
// backend only.
func (m *Manager) owner(ctx context.Context, ns *namespace, t bpf.Target, prefer string) (Backend, *bpf.Chain, error) {
	if m.view == nil {
		return m.readOwner(ctx, ns, t, prefer)
	}
	k := viewKey{netns: ns.key, ifindex: t.Ifindex, hook: t.Hook}
	if o, ok := m.view.owners[k]; ok {
		return o.backend, o.chain, o.err
	}
	if t.Hook == bpf.HookXDP {
		vl, err := m.viewLinks(ns)
		if err != nil {
			return nil, nil, err
		}
		l, ok, err := vl.lookup(m, "", t.Ifindex)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			att := xdp.AttachmentOf(l)
			if att.ProgramID == 0 {
				// Every XDP backend attaches its root to the hook:
				// nothing attached, no chain.
				m.view.owners[k] = viewOwner{}
				return nil, nil, nil
			}
			ctx = xdp.WithKnown(ctx, t.Ifindex, att)
		}
	}
	b, c, err := m.readOwner(ctx, ns, t, prefer)
	if err == nil || errors.Is(err, bpf.ErrForeignProgram) {
		m.view.owners[k] = viewOwner{backend: b, chain: c, err: err}
	}
	return b, c, err
}

// readOwner is owner, asking each backend in turn.
func (m *Manager) readOwner(ctx context.Context, ns *namespace, t bpf.Target, prefer string) (Backend, *bpf.Chain, error) {
	names := preference(t.Hook)
	if i := slices.Index(names, prefer); i > 0 {
		names = append([]string{prefer}, slices.Delete(slices.Clone(names), i, i+1)...)
	}
	var foreign error
	for _, name := range names {
		b, err := m.backend(name)
		if err != nil {
			continue
		}
		b = m.backendIn(b, ns)
		c, err := b.Current(ctx, t)
		switch {
		case errors.Is(err, bpf.ErrForeignProgram):
			foreign = err
		case err != nil:
			return nil, nil, fmt.Errorf("%s: read %s chain: %w", t, name, err)
		case c != nil:
			return b, c, nil
		}
	}
	return nil, nil, foreign
}
