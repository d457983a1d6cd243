package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/dispatcher"
)

// pinStores are the directories under <bpffs>/kfm that key pins by
// [netns/]ifindex (see bpf.Target.PinDir).
var pinStores = []string{"maps", "tailcall", "tcx", "tc"}

// Pruned is the state of one interface that kfm released because the
// interface no longer exists (or another interface now has its ifindex).
type Pruned struct {
	// Netns is the namespace path the host state named ("" for the
	// host); for pins no state accounted for, their directory's
	// namespace key (ns-<cookie>).
	Netns     string `json:"netns,omitempty"`
	Interface string `json:"interface,omitempty"`
	Ifindex   int    `json:"ifindex"`
	// Hooks are the hooks whose host state was dropped.
	Hooks []bpf.Hook `json:"hooks,omitempty"`
	// Pins are the pin directories removed (with them the programs and
	// maps that only the pins kept loaded).
	Pins []string `json:"pins,omitempty"`
}

// sameInterface reports whether the interface kfm finds now is the one hs
// was recorded for. Linux has no generation number for network devices; an
// ifindex is only reused after the counter wraps or when a tool asks for a
// given index (ip link add ... index N, which CNI plugins and tests do), so
// kfm takes the ifindex together with the hardware address as the
// interface's identity (veths and most virtual devices get a random
// address). For an interface without a hardware address, and for entries
// written by an older kfm, the name stands in for it. The namespace's
// identity is checked by the caller (see netnsID).
func sameInterface(hs *HookState, ifc iface) bool {
	if hs.Ifindex != 0 && hs.Ifindex != ifc.Ifindex {
		return false
	}
	if hs.NetnsID != "" && hs.NetnsID != string(ifc.ns.id) {
		return false
	}
	if hs.HWAddr != "" && ifc.hwaddr != "" {
		return hs.HWAddr == ifc.hwaddr
	}
	return hs.Interface == ifc.Interface
}

// sameLink is sameInterface against a link of a dump.
func sameLink(hs *HookState, l netlink.Link) bool {
	a := l.Attrs()
	if hs.Ifindex != 0 && hs.Ifindex != a.Index {
		return false
	}
	if hw := a.HardwareAddr.String(); hs.HWAddr != "" && hw != "" {
		return hs.HWAddr == hw
	}
	return hs.Interface == a.Name
}

// Release forgets what kfm keeps for the interface with ifindex in the
// network namespace netns ("" for the host, else a NAME or path as for
// --netns), after that interface was deleted: its host state, its map pins
// and the backends' pins (whose program arrays and links otherwise keep
// programs and maps loaded for ever). The node agent calls it on a netlink
// link-delete event; every kfm command also prunes all interfaces that no
// longer exist (see Prune), so a missed event only delays the cleanup. If a
// link with ifindex exists and is the interface kfm chained (same hardware
// address, see sameInterface), Release leaves it alone: the event was about
// another interface.
func (m *Manager) Release(ctx context.Context, netns string, ifindex int) ([]Pruned, error) {
	path, err := NetnsPath(netns)
	if err != nil {
		return nil, err
	}
	return m.pruneLocked(ctx, func(ns string, idx int) bool { return ns == path && idx == ifindex })
}

// Prune releases the state of every interface that no longer exists, in
// every namespace the host state names, with one link dump per namespace,
// and removes pin directories no state accounts for whose interface is
// gone. Install, remove, apply and status prune first; the agent may call
// it on its own.
func (m *Manager) Prune(ctx context.Context) ([]Pruned, error) {
	return m.pruneLocked(ctx, nil)
}

// pruneFirst is the prune every command runs first: housekeeping that must
// not stop the command, so a failure is reported as a notice.
func (m *Manager) pruneFirst(st *State) {
	if _, err := m.prune(st, nil); err != nil {
		m.notify(fmt.Sprintf("could not release the state of interfaces that are gone: %v", err))
	}
}

func (m *Manager) pruneLocked(ctx context.Context, only func(netns string, ifindex int) bool) ([]Pruned, error) {
	st, release, err := m.lockState(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return m.prune(st, only)
}

// linkDump lists the links of one namespace by ifindex.
type linkDump map[int]netlink.Link

func (m *Manager) dump(ns *namespace) (linkDump, error) {
	h, err := ns.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list the interfaces of network namespace %s: %w", orHost(ns.path), err)
	}
	d := linkDump{}
	for _, l := range links {
		d[l.Attrs().Index] = l
	}
	return d, nil
}

// nsLinks answers prune's questions about the links of one namespace:
// from the running view, or from a view of its own (see viewLinks: a few
// links by one request each, more by one dump).
type nsLinks struct {
	m   *Manager
	ns  *namespace
	own *viewLinks
}

// maxLinkRequests is how many links are asked for one by one before all
// of a namespace's are dumped.
const maxLinkRequests = 8

func (l *nsLinks) view() (*viewLinks, error) {
	vl, err := l.m.viewLinks(l.ns)
	if err != nil || vl != nil {
		return vl, err
	}
	if l.own == nil {
		l.own = &viewLinks{ns: l.ns, byName: map[string]netlink.Link{}, byIndex: linkDump{}}
	}
	return l.own, nil
}

// all returns every link of the namespace.
func (l *nsLinks) all() (linkDump, error) {
	vl, err := l.view()
	if err != nil {
		return nil, err
	}
	return vl.all(l.m)
}

// byIndex returns the link with index idx, and whether there is one.
func (l *nsLinks) byIndex(idx int) (netlink.Link, bool, error) {
	vl, err := l.view()
	if err != nil {
		return nil, false, err
	}
	return vl.lookup(l.m, "", idx)
}

// prune is Prune with the host lock held and st loaded; it saves st when it
// changed. only, when set, limits it to one interface.
func (m *Manager) prune(st *State, only func(netns string, ifindex int) bool) ([]Pruned, error) {
	if _, err := m.namespace(""); err != nil {
		return nil, err
	}
	type nsInfo struct {
		ns    *namespace // nil: the namespace is gone
		links *nsLinks
	}
	spaces := map[string]*nsInfo{}
	look := func(path string) (*nsInfo, error) {
		if in, ok := spaces[path]; ok {
			return in, nil
		}
		in := &nsInfo{}
		ns, err := m.namespace(path)
		switch {
		case errors.Is(err, ErrNoNetns):
		case err != nil:
			return nil, err
		default:
			in.ns = ns
			in.links = &nsLinks{m: m, ns: ns}
		}
		spaces[path] = in
		return in, nil
	}
	// keyOf is where an entry's pins are: the namespace key it was
	// recorded with (not what its path leads to now).
	keyOf := func(hs *HookState) string {
		if hs.Netns == "" || hs.NetnsID == "" {
			return ""
		}
		return netnsID(hs.NetnsID).key(m.hostNetns)
	}

	gone := map[string]*Pruned{} // by key/ifindex
	var order []string
	alive := map[string]bool{} // key/ifindex of live entries
	keep := st.Hooks[:0:0]
	for _, hs := range st.Hooks {
		id := keyOf(hs) + "/" + strconv.Itoa(hs.Ifindex)
		if hs.Netns == "" && hs.NetnsID != "" && hs.NetnsID != string(m.hostNetns) {
			// Written by a kfm that ran in another namespace with the
			// same state directory (nsenter --net): not this kfm's to
			// judge, and its pins look like the host's.
			keep = append(keep, hs)
			alive[id] = true
			continue
		}
		in, err := look(hs.Netns)
		if err != nil {
			return nil, err
		}
		live := false
		if in.ns != nil && (hs.NetnsID == "" || hs.NetnsID == string(in.ns.id)) {
			if hs.Ifindex == 0 {
				// Written by a kfm that did not record the ifindex of a
				// hook it was about to change: go by name.
				d, err := in.links.all()
				if err != nil {
					return nil, err
				}
				live = slices.ContainsFunc(mapsValues(d), func(l netlink.Link) bool { return l.Attrs().Name == hs.Interface })
			} else if l, ok, err := in.links.byIndex(hs.Ifindex); err != nil {
				return nil, err
			} else if ok {
				live = sameLink(hs, l)
			}
		}
		if live || (only != nil && !only(hs.Netns, hs.Ifindex)) {
			keep = append(keep, hs)
			alive[id] = true
			continue
		}
		p := gone[id]
		if p == nil {
			p = &Pruned{Netns: hs.Netns, Interface: hs.Interface, Ifindex: hs.Ifindex}
			gone[id] = p
			order = append(order, id)
		}
		p.Hooks = append(p.Hooks, hs.Hook)
		if hs.Backend == "dispatcher" && hs.RootID != 0 && hs.Ifindex != 0 {
			dir := dispatcher.PinDir(m.bpffs, hs.Ifindex, hs.RootID)
			if _, err := os.Stat(dir); err == nil {
				p.Pins = append(p.Pins, dir)
			}
		}
	}

	// Pin directories: those of entries just dropped, and those no entry
	// accounts for whose interface (or namespace) is gone.
	host, err := look("")
	if err != nil {
		return nil, err
	}
	for _, store := range pinStores {
		root := filepath.Join(m.bpffs, "kfm", store)
		for _, dir := range m.ifindexDirs(root) {
			key, idx := dir.key, dir.ifindex
			id := key + "/" + strconv.Itoa(idx)
			if alive[id] {
				continue
			}
			if p, ok := gone[id]; ok {
				p.Pins = append(p.Pins, dir.path)
				continue
			}
			if only != nil {
				continue
			}
			if key == "" {
				if _, exists, err := host.links.byIndex(idx); err != nil {
					return nil, err
				} else if exists {
					continue // the interface is there: maybe a chain whose state was lost
				}
			} else if m.keyInUse(st, key) {
				continue
			}
			p := &Pruned{Ifindex: idx, Pins: []string{dir.path}}
			if key != "" {
				p.Netns = key
			}
			gone[id] = p
			order = append(order, id)
		}
	}

	var out []Pruned
	var errs []error
	for _, id := range order {
		p := gone[id]
		for _, dir := range p.Pins {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
			}
			// Empty parents up to <bpffs>/kfm (a namespace's directory).
			for d := filepath.Dir(dir); strings.HasPrefix(d, filepath.Join(m.bpffs, "kfm")+"/") && filepath.Base(filepath.Dir(d)) != "kfm"; d = filepath.Dir(d) {
				if os.Remove(d) != nil {
					break
				}
			}
		}
		out = append(out, *p)
	}
	if len(keep) != len(st.Hooks) {
		st.Hooks = keep
		if err := m.state.save(st); err != nil {
			errs = append(errs, fmt.Errorf("write host state: %w", err))
		}
	}
	return out, errors.Join(errs...)
}

func mapsValues(d linkDump) []netlink.Link {
	out := make([]netlink.Link, 0, len(d))
	for _, l := range d {
		out = append(out, l)
	}
	return out
}

// keyInUse reports whether an entry of st keeps pins under the namespace
// key (its namespace still being the one it was recorded in).
func (m *Manager) keyInUse(st *State, key string) bool {
	return slices.ContainsFunc(st.Hooks, func(hs *HookState) bool {
		return hs.NetnsID != "" && netnsID(hs.NetnsID).key(m.hostNetns) == key
	})
}

type ifindexDir struct {
	path    string
	key     string // "" for the host
	ifindex int
}

// ifindexDirs lists root/<ifindex> and root/ns-*/<ifindex>.
func (m *Manager) ifindexDirs(root string) []ifindexDir {
	var out []ifindexDir
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if idx, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, ifindexDir{path: filepath.Join(root, e.Name()), ifindex: idx})
			continue
		}
		if !strings.HasPrefix(e.Name(), "ns-") {
			continue
		}
		sub, err := os.ReadDir(filepath.Join(root, e.Name()))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		for _, s := range sub {
			if idx, err := strconv.Atoi(s.Name()); err == nil && s.IsDir() {
				out = append(out, ifindexDir{path: filepath.Join(root, e.Name(), s.Name()), key: e.Name(), ifindex: idx})
			}
		}
	}
	return out
}
