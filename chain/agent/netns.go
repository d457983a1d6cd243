package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/chain"
)

// netnsPoll is how often the agent looks at the paths of the network
// namespaces its chains name, besides the fsnotify events of their
// directories (which /proc/PID/ns/net paths and a /run/netns that does not
// exist yet do not give).
const netnsPoll = 2 * time.Second

// follow pokes on every link that appears, disappears or is renamed in the
// network namespace ns (where: its path, "" for the agent's own), and on
// every address of the node's InternalIP that comes or goes there (it moves
// primaryNodeInterface). Other link changes (up/down, the agent's own XDP
// attachments) are ignored. It returns when ctx ends, or with the error
// that ended the subscription.
func (a *Agent) follow(ctx context.Context, ns netns.NsHandle, where string) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", orOwn(where), err)
	}
	defer h.Close()
	updates := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	failed := make(chan error, 1)
	onError := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onError}); err != nil {
		return fmt.Errorf("subscribe to the link events of %s: %w", orOwn(where), err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: onError}); err != nil {
		return fmt.Errorf("subscribe to the address events of %s: %w", orOwn(where), err)
	}
	names := map[int32]string{}
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list the links of %s: %w", orOwn(where), err)
	}
	for _, l := range links {
		names[int32(l.Attrs().Index)] = l.Attrs().Name
	}
	in := func(what string) string {
		if where == "" {
			return what
		}
		return what + " in " + where
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-failed:
			return fmt.Errorf("link events of %s: %w", orOwn(where), err)
		case u, ok := <-addrs:
			if !ok {
				return fmt.Errorf("the address event subscription of %s ended", orOwn(where))
			}
			if ip, ok := netip.AddrFromSlice(u.LinkAddress.IP); ok && a.isNodeIP(ip.Unmap()) {
				a.log.Info("node address changed", "netns", where, "address", ip.Unmap().String(), "added", u.NewAddr)
				a.poke(in("node address " + ip.Unmap().String()))
			}
		case u, ok := <-updates:
			if !ok {
				return fmt.Errorf("the link event subscription of %s ended", orOwn(where))
			}
			idx, name := u.Index, u.Attrs().Name
			switch u.Header.Type {
			case unix.RTM_DELLINK:
				delete(names, idx)
				a.log.Info("link removed", "netns", where, "interface", name)
				a.poke(in("link " + name + " removed"))
			case unix.RTM_NEWLINK:
				old, known := names[idx]
				if known && old == name {
					continue
				}
				names[idx] = name
				if known {
					a.log.Info("link renamed", "netns", where, "interface", name, "was", old)
				} else {
					a.log.Info("link added", "netns", where, "interface", name)
				}
				a.poke(in("link " + name))
			}
		}
	}
}

// isNodeIP reports whether ip is one of the addresses that make an
// interface primaryNodeInterface under the current desired state.
func (a *Agent) isNodeIP(ip netip.Addr) bool {
	a.mu.Lock()
	d := a.desired
	a.mu.Unlock()
	var want Desired
	if d != nil {
		want = *d
	}
	return slices.Contains(a.nodeIPs(want), ip)
}

// namespaces are the paths of the network namespaces the desired state's
// chains name (not the agent's own).
func (a *Agent) namespaces() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]bool{}
	if a.desired == nil {
		return out
	}
	for _, c := range a.desired.Chains {
		if p, err := chain.NetnsPath(c.Netns); err == nil && p != "" {
			out[p] = true
		}
	}
	return out
}

// nsIdentity identifies the network namespace mounted at path: its
// device and inode. ok is false when path does not exist or is not (yet) a
// namespace (`ip netns add` creates the file before it mounts the
// namespace on it).
func nsIdentity(path string) (id [2]uint64, ok bool) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		return id, false
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return id, false
	}
	return [2]uint64{st.Dev, st.Ino}, true
}

// follower is the link subscription of one other network namespace.
type follower struct {
	id     [2]uint64
	cancel context.CancelFunc
	done   chan struct{}
}

// watchNamespaces keeps one link subscription (follow) in every other
// network namespace the desired state's chains name, for as long as it
// exists. A namespace that appears (or is re-created at the same path)
// pokes a reconcile, which applies its chains; one that disappears pokes
// too, and its subscription is closed at once, so that the agent never
// keeps a deleted namespace alive. It watches the namespaces' directories
// (/run/netns) with fsnotify and, for paths that gives no events for, looks
// again every netnsPoll. It returns when ctx ends.
func (a *Agent) watchNamespaces(ctx context.Context) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn("cannot watch network namespace directories; looking every few seconds instead", "error", err)
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	dirs := map[string]bool{}
	running := map[string]*follower{}
	stop := func(path string) {
		f := running[path]
		f.cancel()
		<-f.done
		delete(running, path)
	}
	defer func() {
		for path := range running {
			stop(path)
		}
	}()
	tick := time.NewTicker(netnsPoll)
	defer tick.Stop()
	var soon <-chan time.Time
	// mounting counts the quick looks at a path that exists but is not a
	// namespace yet; a file that stays one is left to the ticker.
	mounting := map[string]int{}
	for {
		wanted := a.namespaces()
		for path := range running {
			if !wanted[path] {
				stop(path)
			}
		}
		for path := range wanted {
			if dir := filepath.Dir(path); w != nil && !dirs[dir] && w.Add(dir) == nil {
				dirs[dir] = true
			}
			id, ok := nsIdentity(path)
			if f := running[path]; f != nil {
				select {
				case <-f.done: // the subscription failed: start over
					stop(path)
				default:
					if ok && f.id == id {
						continue
					}
					stop(path)
					a.log.Info("network namespace gone", "netns", path)
					a.poke("network namespace " + path + " gone")
				}
			}
			if !ok {
				switch {
				case unix.Stat(path, new(unix.Stat_t)) != nil:
					delete(mounting, path)
				case mounting[path] < 20:
					mounting[path]++
					if soon == nil {
						soon = time.After(100 * time.Millisecond) // being mounted: look again soon
					}
				}
				continue
			}
			delete(mounting, path)
			if err := a.startFollower(ctx, path, id, running); err != nil {
				a.log.Warn("follow the links of a network namespace", "netns", path, "error", err)
				continue
			}
			a.log.Info("network namespace present", "netns", path)
			a.poke("network namespace " + path)
		}
		var tickC <-chan time.Time
		if len(wanted) > 0 {
			tickC = tick.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.nsChanged:
		case _, ok := <-events:
			if !ok {
				events = nil
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
			} else {
				a.log.Warn("watch network namespace directories", "error", err)
			}
		case <-tickC:
		case <-soon:
			soon = nil
		}
	}
}

// startFollower subscribes to the links of the namespace at path, which
// has identity id, and records the subscription in running.
func (a *Agent) startFollower(ctx context.Context, path string, id [2]uint64, running map[string]*follower) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	f := &follower{id: id, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer ns.Close()
		if err := a.follow(fctx, ns, path); err != nil && fctx.Err() == nil && !errors.Is(err, context.Canceled) {
			a.log.Warn("link events of a network namespace", "netns", path, "error", err)
		}
	}()
	running[path] = f
	return nil
}
