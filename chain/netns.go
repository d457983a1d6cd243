package chain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
)

// ErrNoNetns: a chain names a network namespace that does not exist.
var ErrNoNetns = errors.New("no such network namespace")

// NetnsDir is where `ip netns add NAME` bind-mounts named namespaces.
const NetnsDir = "/run/netns"

// NetnsPath turns what a user writes for a network namespace (--netns, a
// chain's netns: in kfm.yaml) into the path kfm records: "" stays "" (the
// namespace kfm runs in), a NAME is /run/netns/NAME, an absolute PATH (a
// bind mount, or /proc/PID/ns/net) is kept as it is, cleaned.
func NetnsPath(s string) (string, error) {
	switch {
	case s == "":
		return "", nil
	case filepath.IsAbs(s):
		return filepath.Clean(s), nil
	case strings.ContainsRune(s, '/') || s == "." || s == "..":
		return "", fmt.Errorf("network namespace %q: give a name from `ip netns list` or an absolute path", s)
	}
	return filepath.Join(NetnsDir, s), nil
}

// netnsID identifies a network namespace for as long as the system runs.
// kfm uses the namespace's cookie (SO_NETNS_COOKIE, kernel 5.14+): a 64-bit
// number the kernel never gives to another namespace before a reboot. The
// inode number of the namespace file, the other candidate, is reused once a
// namespace dies, and a new namespace at the same /run/netns path with the
// same inode would then inherit the dead one's pins. On kernels without
// cookies kfm falls back to the device and inode of the namespace file
// ("ino-DEV-INO"), with that weakness.
type netnsID string

// netnsKey is the directory name pins of a namespace live under (see
// bpf.Target.Netns): "" for the host namespace.
func (id netnsID) key(host netnsID) string {
	if id == host {
		return ""
	}
	return "ns-" + string(id)
}

// inNetns runs fn on an OS thread switched into the namespace at path (the
// calling thread's namespace when path is ""). XDP and TCX attach and
// netlink sockets resolve ifindexes in the namespace of the thread that
// calls them, so every backend call for a chain in another namespace goes
// through here. The thread is given back to Go only once it is back in its
// own namespace; if that fails it dies with its goroutine.
func inNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return netnsError(path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get the current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func netnsError(path string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network namespace %s: %w (see `ip netns list`)", path, ErrNoNetns)
	}
	return fmt.Errorf("network namespace %s: %w", path, err)
}

// readNetnsID reads the identity of the namespace at path ("" for the
// calling thread's).
func readNetnsID(path string) (netnsID, error) {
	var id netnsID
	err := inNetns(path, func() error {
		// A route netlink socket: every kernel kfm runs on has one.
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		if err == nil {
			id = netnsID(strconv.FormatUint(cookie, 10))
			return nil
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		id = netnsID(fmt.Sprintf("ino-%d-%d", st.Dev, st.Ino))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("identify network namespace %s: %w", orHost(path), err)
	}
	return id, nil
}

func orHost(path string) string {
	if path == "" {
		return "(host)"
	}
	return path
}

// namespace is a network namespace kfm acts in during one command.
type namespace struct {
	path string  // "" for the host
	id   netnsID // its identity
	key  string  // bpf.Target.Netns: "" for the host
}

// namespace resolves path (already normalised by NetnsPath) and caches it
// for the Manager's lifetime (one command). A path that leads to the
// namespace kfm runs in is the host namespace.
func (m *Manager) namespace(path string) (*namespace, error) {
	if ns, ok := m.netns[path]; ok {
		return ns, nil
	}
	if m.hostNetns == "" {
		id, err := readNetnsID("")
		if err != nil {
			return nil, err
		}
		m.hostNetns = id
	}
	ns := &namespace{path: path, id: m.hostNetns}
	if path != "" {
		id, err := readNetnsID(path)
		if err != nil {
			return nil, err
		}
		ns.id, ns.key = id, id.key(m.hostNetns)
	}
	m.netns[path] = ns
	return ns, nil
}

// Refresh forgets the network namespaces the Manager resolved, so that the
// next call looks at every namespace path afresh: one deleted since is
// gone, one re-created at the same path is a new namespace with pins of
// its own. Long-running callers (the node agent) call it before each
// round; a one-shot command never needs it.
func (m *Manager) Refresh() {
	clear(m.netns)
}

// handle is a route netlink handle whose socket lives in ns. (Without a
// family list the library opens xfrm and netfilter sockets too, which
// kernels without those modules refuse.)
func (ns *namespace) handle() (*netlink.Handle, error) {
	if ns.path == "" {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	h, err := netns.GetFromPath(ns.path)
	if err != nil {
		return nil, netnsError(ns.path, err)
	}
	defer h.Close()
	return netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
}

// nsBackend runs a backend's calls in a network namespace.
type nsBackend struct {
	Backend
	path string
}

func (m *Manager) backendIn(b Backend, ns *namespace) Backend {
	if b == nil || ns == nil || ns.path == "" {
		return b
	}
	return nsBackend{Backend: b, path: ns.path}
}

func (b nsBackend) Current(ctx context.Context, t bpf.Target) (c *bpf.Chain, err error) {
	err = inNetns(b.path, func() error {
		c, err = b.Backend.Current(ctx, t)
		return err
	})
	return c, err
}

func (b nsBackend) Prepare(ctx context.Context, t bpf.Target, desired []bpf.Component, opts bpf.PrepareOptions) (bpf.Change, error) {
	var c bpf.Change
	err := inNetns(b.path, func() error {
		var err error
		c, err = b.Backend.Prepare(ctx, t, desired, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return nsChange{Change: c, path: b.path}, nil
}

func (b nsBackend) Release(ctx context.Context, t bpf.Target) error {
	return inNetns(b.path, func() error { return b.Backend.Release(ctx, t) })
}

// nsChange runs a change's steps in a network namespace.
type nsChange struct {
	bpf.Change
	path string
}

func (c nsChange) Commit(ctx context.Context) error {
	return inNetns(c.path, func() error { return c.Change.Commit(ctx) })
}

func (c nsChange) Revert(ctx context.Context) error {
	return inNetns(c.path, func() error { return c.Change.Revert(ctx) })
}

func (c nsChange) Close() error {
	return inNetns(c.path, c.Change.Close)
}

// pinTarget is where the pins of a chain that Status reported live: its
// interface and hook, keyed by its network namespace. A namespace that can
// no longer be resolved keys nothing (its pins are pruned by the next
// command that takes the lock).
func (m *Manager) pinTarget(hs *HookStatus) bpf.Target {
	t := bpf.Target{Interface: hs.Interface, Ifindex: hs.Ifindex, Hook: hs.Hook}
	if hs.Netns != "" {
		if ns, err := m.namespace(hs.Netns); err == nil {
			t.Netns = ns.key
		}
	}
	return t
}
