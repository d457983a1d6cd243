package chain

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kfm-project/kfm/bpf"
)

// Errors callers branch on.
var (
	// ErrNoInterface: the named interface does not exist in the network
	// namespace kfm runs in.
	ErrNoInterface = errors.New("no such interface")
	// ErrNotInstalled: remove was asked for a program that is not on the
	// hook.
	ErrNotInstalled = errors.New("program not installed")
	// ErrNotOwner: the hook runs a chain someone else manages (kfm.yaml,
	// another owner of the agent, or another tool), which the change must
	// not touch.
	ErrNotOwner = errors.New("hook managed by someone else")
)

// ownerName describes a HookState.Owner for messages.
func ownerName(owner string) string {
	if owner == "" {
		return "kfm.yaml (kfm install/apply)"
	}
	return "the kfm agent's " + owner
}

// Options configure a Manager.
type Options struct {
	// BPFFS is the BPF filesystem to pin under; mounted if missing.
	BPFFS string
	// StateDir holds the host state (state.json, lock).
	StateDir string
	// ConfigDir holds kfm.yaml and kfm.lock.
	ConfigDir string
	// Sources fetches and verifies programs; nil allows local object
	// files only.
	Sources *Sources
	// Backends are the backends kfm may use.
	Backends []Backend
	// LockTimeout bounds the wait for another kfm process (0: wait
	// until the context ends).
	LockTimeout time.Duration
	// Notify receives notices for the user (e.g. waiting for the lock).
	Notify func(msg string)
	// Checkpoint, when set, is called at each step of an apply with the
	// step's name: "prepared" (all hooks loaded), "written-ahead" (pending
	// IDs in the host state), "committed-N" (the N-th changed hook
	// switched), "cleaned-up", "state-saved", "files-saved" (kfm.yaml and
	// kfm.lock written). Crash tests use it to kill kfm between steps; it
	// has no other use.
	Checkpoint func(step string)
}

// Manager applies chains to the host. A Manager serves one command: it
// caches feature probes and the identities of the network namespaces it
// resolved for its lifetime (a long-running caller such as the node agent
// calls Refresh before each round, so that a namespace re-created at the
// same path is seen as new). It is not safe for concurrent use.
type Manager struct {
	bpffs       string
	configDir   string
	sources     *Sources
	state       stateStore
	maps        mapStore
	backends    []Backend
	lockTimeout time.Duration
	notify      func(string)
	checkpoint  func(string)
	probed      map[string]error
	bpffsOK     bool // ensureBPFFS succeeded
	// view is what the running operation read from the kernel for
	// every hook (see view.go); nil between operations.
	view *view
	// snaps is what Snapshot keeps between snapshots.
	snaps *snapCache

	// pinMarks remembers the element directories whose map pins were
	// found complete (see pinmarks.go).
	pinMarks pinMarks
	// netns caches the namespaces resolved during the command, by path;
	// hostNetns is the identity of the namespace kfm runs in.
	netns     map[string]*namespace
	hostNetns netnsID
}

// New returns a Manager.
func New(opts Options) (*Manager, error) {
	if opts.BPFFS == "" || opts.StateDir == "" || opts.ConfigDir == "" {
		return nil, errors.New("chain: BPFFS, StateDir and ConfigDir are required")
	}
	sources := opts.Sources
	if sources == nil {
		sources = &Sources{BaseDir: opts.ConfigDir}
	}
	notify := opts.Notify
	if notify == nil {
		notify = func(string) {}
	}
	return &Manager{
		bpffs:       opts.BPFFS,
		configDir:   opts.ConfigDir,
		sources:     sources,
		state:       stateStore{dir: opts.StateDir},
		maps:        newMapStore(opts.BPFFS),
		backends:    opts.Backends,
		lockTimeout: opts.LockTimeout,
		notify:      notify,
		checkpoint:  opts.Checkpoint,
		probed:      map[string]error{},
		netns:       map[string]*namespace{},
	}, nil
}

// lock takes the host lock and makes sure bpffs is there.
func (m *Manager) lock(ctx context.Context) (*hostLock, error) {
	l, err := acquireLock(ctx, m.state.dir, m.lockTimeout, m.notify)
	if err != nil {
		return nil, err
	}
	if err := m.ensureBPFFS(); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

// lockState takes the host lock and reads the host state under it; release
// gives the lock back.
func (m *Manager) lockState(ctx context.Context) (st *State, release func(), err error) {
	l, err := m.lock(ctx)
	if err != nil {
		return nil, nil, err
	}
	if st, err = m.state.load(); err != nil {
		l.release()
		return nil, nil, err
	}
	return st, func() { l.release() }, nil
}

// iface is an interface kfm acts on: where it is and what identifies it.
type iface struct {
	bpf.Target
	ns     *namespace
	hwaddr string
}

// target finds iface in the network namespace at netnsPath ("" for the
// host): in the operation's view of the namespace's links when one runs,
// else through a netlink socket in that namespace.
func (m *Manager) target(netnsPath, name string, hook bpf.Hook) (iface, error) {
	ns, err := m.namespace(netnsPath)
	if err != nil {
		return iface{}, err
	}
	l, err := m.link(ns, name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			if netnsPath != "" {
				return iface{}, fmt.Errorf("interface %q: %w in network namespace %s (check `ip -n %s link`)", name, ErrNoInterface, netnsPath, netnsPath)
			}
			return iface{}, fmt.Errorf("interface %q: %w in this network namespace (check `ip link`, or use --netns)", name, ErrNoInterface)
		}
		return iface{}, fmt.Errorf("interface %q: %w", name, err)
	}
	return iface{
		Target: bpf.Target{Interface: name, Ifindex: l.Attrs().Index, Hook: hook, BPFFS: m.bpffs, Netns: ns.key},
		ns:     ns,
		hwaddr: l.Attrs().HardwareAddr.String(),
	}, nil
}

func (m *Manager) step(name string) {
	if m.checkpoint != nil {
		m.checkpoint(name)
	}
}
