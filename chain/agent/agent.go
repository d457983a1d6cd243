package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/verify"
)

// Defaults of Options.
const (
	DefaultDriftInterval = 60 * time.Second
	DefaultRetryMin      = time.Second
	DefaultRetryMax      = 2 * time.Minute
)

// Options configure an Agent.
type Options struct {
	// Manager applies the chains (its Sources verify them under the
	// node's policy).
	Manager *chain.Manager
	Source  Source
	// NodeIP is the node's InternalIP: the interface that carries it is
	// the PrimaryNodeInterface. The zero value: none. A source's
	// Desired.NodeIPs override it.
	NodeIP netip.Addr
	// DriftInterval is the period of the drift check that puts back
	// chains changed by hand (0: DefaultDriftInterval).
	DriftInterval time.Duration
	// RetryMin and RetryMax bound the backoff after a failed reconcile.
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
	Metrics            *Metrics
	// Reconciled, when set, is called after every reconcile with its
	// result (tests, and status pages).
	Reconciled func(Result)
}

// Agent converges the node on its source's desired state.
type Agent struct {
	opts    Options
	log     *slog.Logger
	trigger chan string

	mu      sync.Mutex
	desired *Desired
	// status is what each hook ran after the last round (backend,
	// programs with their IDs), reused while ApplyLock reports the hook
	// unchanged: a round at 300 chains otherwise spent half its time
	// reading the host state once per hook. Only Reconcile uses it.
	status map[hookKey]hookResult
	// nsChanged tells watchNamespaces that the desired state changed
	// (which namespaces to follow).
	nsChanged chan struct{}

	ready atomic.Bool
}

// New returns an Agent.
func New(opts Options) (*Agent, error) {
	if opts.Manager == nil || opts.Source == nil {
		return nil, errors.New("agent: Manager and Source are required")
	}
	if opts.DriftInterval <= 0 {
		opts.DriftInterval = DefaultDriftInterval
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = DefaultRetryMin
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(DefaultRetryMax, opts.RetryMin)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{opts: opts, log: log, trigger: make(chan string, 1), nsChanged: make(chan struct{}, 1)}, nil
}

// Ready reports whether a reconcile has applied every chain at least once.
func (a *Agent) Ready() bool { return a.ready.Load() }

// poke asks for a reconcile; pokes while one is pending merge.
func (a *Agent) poke(why string) {
	select {
	case a.trigger <- why:
	default:
	}
}

// Run runs the agent until ctx ends or the source fails. It acts in the
// network namespace of the calling thread (lock it with
// runtime.LockOSThread when that is not the process's own): reconciles
// run on a thread of their own in that namespace, and the link
// subscription listens there. Chains in other network namespaces get a
// subscription of their own in theirs, for as long as the namespace exists
// (see watchNamespaces).
func (a *Agent) Run(ctx context.Context) error {
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("agent: own network namespace: %w", err)
	}
	defer ns.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	go func() {
		errc <- a.opts.Source.Run(ctx, func(d Desired) {
			a.mu.Lock()
			a.desired = &d
			a.mu.Unlock()
			select {
			case a.nsChanged <- struct{}{}:
			default:
			}
			a.poke("source changed")
		})
	}()
	go func() {
		err := a.follow(ctx, ns, "")
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("agent: %w", err)
		}
		errc <- err
	}()
	go func() { errc <- a.watchNamespaces(ctx) }()
	go func() { errc <- a.loop(ctx, ns) }()

	err = <-errc
	cancel()
	// Wait for the others, the reconcile loop above all: an apply in
	// progress finishes before Run returns.
	for range 3 {
		<-errc
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) || err == nil {
		return nil
	}
	return err
}

// loop runs reconciles, one at a time, on a thread in the agent's
// namespace: on a poke, on the drift ticker, and on retries with backoff.
func (a *Agent) loop(ctx context.Context, ns netns.NsHandle) error {
	runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("agent: enter own network namespace: %w", err)
	}
	drift := time.NewTicker(a.opts.DriftInterval)
	defer drift.Stop()
	var retry <-chan time.Time
	backoff := a.opts.RetryMin
	for {
		var why string
		select {
		case <-ctx.Done():
			return ctx.Err()
		case why = <-a.trigger:
		case <-drift.C:
			why = "drift check"
		case <-retry:
			why = "retry"
		}
		a.mu.Lock()
		d := a.desired
		a.mu.Unlock()
		if d == nil {
			continue // nothing from the source yet
		}
		start := time.Now()
		res, err := a.Reconcile(ctx, *d)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Conflicts and missing interfaces are states, not failures: they
		// change with the source or the node, which trigger a reconcile,
		// and the drift check looks again.
		failed := (err != nil && classify(err) != ReasonConflict) || slices.ContainsFunc(res.Chains, func(c ChainResult) bool {
			return !c.Applied && c.Reason != ReasonInterfaceMissing && c.Reason != ReasonConflict
		})
		attrs := []any{"trigger", why, "chains", len(res.Chains), "duration", time.Since(start).Round(time.Millisecond)}
		switch {
		case failed:
			retry = time.After(backoff)
			a.log.Warn("reconcile incomplete", append(attrs, "error", err, "retry_in", backoff)...)
			backoff = min(2*backoff, a.opts.RetryMax)
		default:
			retry, backoff = nil, a.opts.RetryMin
			a.log.Debug("reconciled", attrs...)
		}
		if m := a.opts.Metrics; m != nil {
			roundErr := err
			if failed && roundErr == nil {
				roundErr = errors.New("chains not applied")
			}
			m.Ops.ObserveReconcile(a.sourceKind(), time.Since(start), roundErr)
			m.Chains.Reset()
			for _, c := range res.Chains {
				state := "applied"
				if !c.Applied {
					state = c.Reason
				}
				m.Chains.WithLabelValues(state).Inc()
			}
			if !failed {
				m.LastSuccess.SetToCurrentTime()
			}
		}
		if !failed {
			a.ready.Store(true)
		}
		if r, ok := a.opts.Source.(Reporter); ok {
			if err := r.Report(ctx, res); err != nil {
				a.log.Warn("report status", "source", a.opts.Source.Name(), "error", err)
			}
		}
		if a.opts.Reconciled != nil {
			a.opts.Reconciled(res)
		}
	}
}

// nodeIPs are the addresses that make an interface primaryNodeInterface.
func (a *Agent) nodeIPs(d Desired) []netip.Addr {
	ips := d.NodeIPs
	if len(ips) == 0 && a.opts.NodeIP.IsValid() {
		ips = []netip.Addr{a.opts.NodeIP}
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.Unmap())
	}
	return out
}

// sourceKind labels the kfm_reconcile_* metrics.
func (a *Agent) sourceKind() string {
	if k, ok := a.opts.Source.(Kinder); ok {
		return k.Kind()
	}
	return a.opts.Source.Name()
}

// instance is one chain on one interface.
type instance struct {
	chain *Chain
	netns string // path, "" for the agent's own
	iface string
}

// hookKey names a hook of the node.
type hookKey struct {
	netns string
	iface string
	hook  bpf.Hook
}

// hookResult is what runs on a hook, for ChainResult.
type hookResult struct {
	backend  string
	programs []ProgramResult
}

// nsLinks are the links of one network namespace, or why there are none.
type nsLinks struct {
	links []Link
	err   error
}

// Reconcile makes the node run d once: it evaluates every chain's
// interface selector on the links of the chain's network namespace, sets
// hooks that two owners claim aside (Conflict: they stay as they run), and
// applies each owner's chains as one transaction through
// chain.Manager.ApplyLock, pruning the hooks the owner holds and no longer
// wants. Owners in the host state that d no longer names are pruned first,
// so that a hook can change hands, and before anything the state of
// interfaces (and namespaces) that are gone is released
// (chain.Manager.Prune). A chain whose network namespace does not exist
// (yet) reports InterfaceMissing and leaves the other chains alone. The
// returned error is the first failure of an apply; the Result says, chain
// by chain, what happened. It must run on a thread in the agent's
// namespace (Run does that).
func (a *Agent) Reconcile(ctx context.Context, d Desired) (Result, error) {
	var res Result
	mgr := a.opts.Manager
	// Namespaces are looked at afresh every round: one deleted and
	// re-created at the same path is a new one.
	mgr.Refresh()
	if pruned, err := mgr.Prune(ctx); err != nil {
		a.log.Warn("release the state of interfaces that are gone", "error", err)
	} else {
		for _, p := range pruned {
			a.log.Info("released the state of an interface that is gone", "netns", p.Netns, "interface", p.Interface, "ifindex", p.Ifindex, "hooks", p.Hooks)
		}
	}
	nodeIPs := a.nodeIPs(d)
	spaces := map[string]*nsLinks{}
	linksIn := func(path string) *nsLinks {
		if nl, ok := spaces[path]; ok {
			return nl
		}
		nl := &nsLinks{}
		nl.links, nl.err = a.links(path, nodeIPs)
		spaces[path] = nl
		return nl
	}
	if own := linksIn(""); own.err != nil {
		return res, own.err
	}
	// Which interfaces each chain gets, and which hooks are claimed twice.
	claims := map[hookKey][]instance{}
	for i := range d.Chains {
		c := &d.Chains[i]
		base := ChainResult{Owner: c.Owner, Generation: c.Generation, Netns: c.Netns, Hook: c.Hook, Backend: c.Backend}
		path, err := chain.NetnsPath(c.Netns)
		if err != nil {
			r := base
			r.Reason, r.Message = ReasonLoadFailed, err.Error()
			res.Chains = append(res.Chains, r)
			continue
		}
		base.Netns = path
		nl := linksIn(path)
		if nl.err != nil {
			r := base
			r.Reason, r.Message = ReasonLoadFailed, nl.err.Error()
			if errors.Is(nl.err, chain.ErrNoNetns) {
				r.Reason = ReasonInterfaceMissing
				r.Message = fmt.Sprintf("network namespace %s does not exist (yet); the chain is applied when it appears", path)
			}
			res.Chains = append(res.Chains, r)
			continue
		}
		picked, missing, err := c.Interfaces.Select(nl.links)
		if err != nil {
			r := base
			r.Reason, r.Message = ReasonInterfaceMissing, err.Error()
			res.Chains = append(res.Chains, r)
			continue
		}
		where := "the node"
		if path != "" {
			where = "network namespace " + path
		}
		for _, name := range missing {
			r := base
			r.Interface, r.Reason = name, ReasonInterfaceMissing
			r.Message = fmt.Sprintf("%s has no interface %s", where, name)
			if name == "primaryNodeInterface" {
				r.Interface, r.Message = "", fmt.Sprintf("no interface of %s carries the node's InternalIP %v", where, nodeIPs)
			}
			res.Chains = append(res.Chains, r)
		}
		if len(picked) == 0 && len(missing) == 0 {
			r := base
			r.Reason, r.Message = ReasonInterfaceMissing, fmt.Sprintf("the interface selector picks no interface of %s", where)
			res.Chains = append(res.Chains, r)
		}
		for _, iface := range picked {
			k := hookKey{path, iface, c.Hook}
			claims[k] = append(claims[k], instance{chain: c, netns: path, iface: iface})
		}
	}
	contested := map[hookKey]bool{}
	byOwner := map[string][]instance{}
	for k, ins := range claims {
		owners := map[string]bool{}
		for _, in := range ins {
			owners[in.chain.Owner] = true
		}
		if len(owners) > 1 {
			contested[k] = true
			var names []string
			for o := range owners {
				names = append(names, o)
			}
			sort.Strings(names)
			for _, in := range ins {
				res.Chains = append(res.Chains, a.result(in, ReasonConflict, fmt.Sprintf("%s %s is claimed by %v; it stays as it runs until one gives it up", in.where(), k.hook, names)))
			}
			continue
		}
		if len(ins) > 1 {
			// One owner selects the same hook twice (two chains of one
			// ChainSet): the first wins, the others report it.
			for _, in := range ins[1:] {
				res.Chains = append(res.Chains, a.result(in, ReasonConflict, fmt.Sprintf("%s %s is selected by two chains of %s", in.where(), k.hook, in.chain.Owner)))
			}
		}
		byOwner[ins[0].chain.Owner] = append(byOwner[ins[0].chain.Owner], ins[0])
	}
	keep := func(netns, iface string, hook bpf.Hook) bool { return contested[hookKey{netns, iface, hook}] }

	owned, err := mgr.Owned(ctx)
	if err != nil {
		return res, err
	}
	var gone []string
	for _, hs := range owned {
		if _, wanted := byOwner[hs.Owner]; !wanted && !slices.Contains(gone, hs.Owner) && !slices.ContainsFunc(d.Chains, func(c Chain) bool { return c.Owner == hs.Owner }) {
			gone = append(gone, hs.Owner)
		}
	}
	var firstErr error
	note := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	// Owners that want nothing here any more give their hooks up first.
	for _, owner := range gone {
		if _, err := a.applyLock(ctx, nil, chain.LockApplyOptions{Owner: owner, Prune: true, Keep: keep}); err != nil {
			note(fmt.Errorf("remove the chains of %s: %w", owner, err))
			a.log.Warn("remove chains", "owner", owner, "error", err)
		} else {
			a.log.Info("removed chains", "owner", owner)
		}
	}
	// Owners with chains but none on this node's interfaces still prune.
	for _, c := range d.Chains {
		if _, ok := byOwner[c.Owner]; !ok {
			byOwner[c.Owner] = nil
		}
	}
	status := map[hookKey]hookResult{}
	defer func() { a.status = status }()
	owners := make([]string, 0, len(byOwner))
	for o := range byOwner {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	for _, owner := range owners {
		ins := byOwner[owner]
		sort.Slice(ins, func(i, j int) bool {
			if ins[i].netns != ins[j].netns {
				return ins[i].netns < ins[j].netns
			}
			if ins[i].iface != ins[j].iface {
				return ins[i].iface < ins[j].iface
			}
			return ins[i].chain.Hook < ins[j].chain.Hook
		})
		lk := &chain.Lock{Version: chain.LockVersion}
		for _, in := range ins {
			lk.Chains = append(lk.Chains, chain.LockedChain{
				Interface: in.iface, Netns: in.netns, Hook: in.chain.Hook, Backend: in.chain.Backend, Mode: in.chain.Mode,
				Programs: in.chain.Programs,
			})
		}
		ar, err := a.applyLock(ctx, lk, chain.LockApplyOptions{Owner: owner, Prune: true, Keep: keep})
		if err != nil {
			note(err)
			reason := classify(err)
			a.log.Warn("apply", "owner", owner, "reason", reason, "error", err)
			for _, in := range ins {
				res.Chains = append(res.Chains, a.result(in, reason, err.Error()))
			}
			continue
		}
		unchanged := map[hookKey]bool{}
		for _, c := range ar.Changes {
			if c.Unchanged() {
				unchanged[hookKey{c.Netns, c.Interface, c.Hook}] = true
			} else {
				a.log.Info("applied", "owner", owner, "netns", c.Netns, "interface", c.Interface, "hook", c.Hook, "backend", c.Backend,
					"chain", c.Order, "added", c.Added, "removed", c.Removed, "updated", c.Updated, "moved", c.Moved, "recovered", c.Recovered)
			}
		}
		for _, in := range ins {
			r := a.result(in, "", "")
			r.Applied = true
			k := hookKey{in.netns, in.iface, in.chain.Hook}
			hr, ok := a.status[k]
			if !ok || !unchanged[k] {
				hr = hookResult{}
				hs, err := mgr.HookStatus(ctx, in.netns, in.iface, in.chain.Hook)
				if err != nil {
					a.log.Warn("status", "netns", in.netns, "interface", in.iface, "hook", in.chain.Hook, "error", err)
				}
				if hs != nil {
					hr.backend = hs.Backend
					for _, p := range hs.Programs {
						hr.programs = append(hr.programs, ProgramResult{Name: p.Name, Digest: p.Digest, ID: uint32(p.ProgramID)})
					}
				}
				ok = err == nil && hs != nil
			}
			if ok {
				status[k] = hr
			}
			if hr.backend != "" {
				r.Backend = hr.backend
			}
			r.Programs = hr.programs
			res.Chains = append(res.Chains, r)
		}
	}
	sort.SliceStable(res.Chains, func(i, j int) bool {
		a, b := res.Chains[i], res.Chains[j]
		if a.Owner != b.Owner {
			return a.Owner < b.Owner
		}
		if a.Netns != b.Netns {
			return a.Netns < b.Netns
		}
		if a.Interface != b.Interface {
			return a.Interface < b.Interface
		}
		return a.Hook < b.Hook
	})
	return res, firstErr
}

// applyLock is Manager.ApplyLock, counted in kfm_apply_*.
func (a *Agent) applyLock(ctx context.Context, lk *chain.Lock, opts chain.LockApplyOptions) (*chain.ApplyResult, error) {
	start := time.Now()
	ar, err := a.opts.Manager.ApplyLock(ctx, lk, opts)
	if m := a.opts.Metrics; m != nil {
		m.Ops.ObserveApply(time.Since(start), err)
	}
	return ar, err
}

func (a *Agent) result(in instance, reason, msg string) ChainResult {
	return ChainResult{
		Owner: in.chain.Owner, Generation: in.chain.Generation, Interface: in.iface, Netns: in.netns,
		Hook: in.chain.Hook, Backend: in.chain.Backend, Reason: reason, Message: msg,
	}
}

// where names the instance's interface for messages.
func (in instance) where() string {
	if in.netns != "" {
		return in.iface + " (network namespace " + in.netns + ")"
	}
	return in.iface
}

// links lists the interfaces of the network namespace at path ("" for the
// calling thread's), marking the ones that carry one of nodeIPs. A path
// that does not exist gives an error wrapping chain.ErrNoNetns.
func (a *Agent) links(path string, nodeIPs []netip.Addr) ([]Link, error) {
	var h *netlink.Handle
	if path == "" {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
	} else {
		ns, err := netns.GetFromPath(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("network namespace %s: %w", path, chain.ErrNoNetns)
		}
		if err != nil {
			return nil, fmt.Errorf("network namespace %s: %w", path, err)
		}
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		ns.Close()
		if err != nil {
			return nil, fmt.Errorf("network namespace %s: %w (is it a network namespace?)", path, err)
		}
	}
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links of %s: %w", orOwn(path), err)
	}
	primary := map[int]bool{}
	if len(nodeIPs) > 0 {
		// One dump of every address of the namespace.
		addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", orOwn(path), err)
		}
		for _, ad := range addrs {
			if ip, ok := netip.AddrFromSlice(ad.IP); ok && slices.Contains(nodeIPs, ip.Unmap()) {
				primary[ad.LinkIndex] = true
			}
		}
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		out = append(out, Link{Name: l.Attrs().Name, Primary: primary[l.Attrs().Index]})
	}
	return out, nil
}

func orOwn(path string) string {
	if path == "" {
		return "the agent's network namespace"
	}
	return "network namespace " + path
}

// classify maps an apply error to a condition reason.
func classify(err error) string {
	switch {
	case errors.Is(err, chain.ErrNotOwner), errors.Is(err, bpf.ErrForeignProgram):
		return ReasonConflict
	case errors.Is(err, verify.ErrUnsigned), errors.Is(err, verify.ErrUntrusted), errors.Is(err, verify.ErrInvalidSignature),
		errors.Is(err, verify.ErrContent), errors.Is(err, chain.ErrSignerChanged), errors.Is(err, chain.ErrObjectChanged),
		errors.Is(err, chain.ErrNoPolicy), errors.Is(err, verify.ErrPolicy):
		return ReasonVerificationFailed
	case errors.Is(err, chain.ErrNoInterface), errors.Is(err, chain.ErrNoNetns):
		return ReasonInterfaceMissing
	default:
		return ReasonLoadFailed
	}
}
