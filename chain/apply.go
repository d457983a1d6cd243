package chain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netns"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/compat"
	"github.com/kfm-project/kfm/bpf/dispatcher"
)

// HookSpec is what one hook should run.
type HookSpec struct {
	// Netns is the network namespace of the interface: "" for the one kfm
	// runs in, else a path (see NetnsPath).
	Netns     string
	Interface string
	Hook      bpf.Hook
	// Backend is "" or "auto" (keep the running backend, or choose one by
	// feature probe for a new chain) or a backend name (switch to it).
	Backend string
	// Mode is the XDP attach mode ("" keeps the current one, else native).
	Mode string
	// Elements are kfm's programs for the hook, in any order.
	Elements []*Element
	// DropForeign names programs loaded by other tools (by their kernel
	// name) that the change removes.
	DropForeign []string
	// ResetMaps allows upgrades that change map definitions, starting
	// from empty maps.
	ResetMaps bool
	// Owner is who manages the hook: "" for kfm.yaml (the CLI), else the
	// agent's owner name (see ApplyLock). It is recorded in the host
	// state; a hook recorded for another owner is refused with
	// ErrNotOwner. An owner other than "" holds the hook whole: programs
	// other tools added to it are dropped, and a hook that runs a chain
	// it does not own is refused.
	Owner string
}

// hookPlan is one hook's share of an apply.
type hookPlan struct {
	target    bpf.Target
	ns        *namespace
	hwaddr    string
	netnsPath string
	old       *HookState
	backend   Backend
	reason    string
	previous  Backend    // the backend being replaced (switch), if any
	prevChain *bpf.Chain // its chain
	mode      string
	resetMaps bool
	current   *bpf.Chain // what the owner runs now, nil if nothing
	vanished  bool       // the state names a chain the kernel no longer runs
	orphan    *bpf.Chain // kfm's chain running without its pins (see orphanRoot)
	noop      bool       // the hook already runs exactly this chain
	owner     string     // HookSpec.Owner

	// comps is the chain in run order; elems[i] is the kfm element behind
	// comps[i], nil for a program another tool loaded.
	comps    []bpf.Component
	elems    []*Element
	maps     []*elementMaps
	counters []*elementCounters
	change   bpf.Change
}

// maxConflictRetries bounds how often apply starts over when another tool
// changed a hook between prepare and commit (libxdp tries 10 times too).
const maxConflictRetries = 10

// apply is applyOnce, started over (planned afresh from what the kernel
// runs then) when another process changed a hook under it: bpf.ErrConflict
// means nothing of this attempt stayed in place.
func (m *Manager) apply(ctx context.Context, st *State, specs []HookSpec) error {
	delay := 5 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := m.applyOnce(ctx, st, specs)
		m.refreshView() // the hooks changed, or someone else changed them
		if !errors.Is(err, bpf.ErrConflict) || attempt == maxConflictRetries {
			return err
		}
		m.notify(fmt.Sprintf("another process changed a hook meanwhile (%v); trying again", err))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// applyOnce makes the hooks in specs run what they say, as one transaction:
// every program of every hook is loaded (the verifier has passed them all)
// before the first hook changes; a failure while committing reverts the
// hooks already switched. The caller holds the host lock; st is updated
// and saved.
func (m *Manager) applyOnce(ctx context.Context, st *State, specs []HookSpec) error {
	var plans []*hookPlan
	abortAll := func() {
		for _, p := range plans {
			p.abort()
		}
	}
	for _, spec := range specs {
		p, err := m.plan(ctx, st, spec)
		if err != nil {
			return err
		}
		plans = append(plans, p)
	}
	// Maps of running programs that lost their pins are pinned again
	// first, so that neither this change nor a later one starts them
	// empty (a no-op apply too: that is how a pin removed by hand comes
	// back).
	m.repinMaps(ctx, plans)
	if !slices.ContainsFunc(plans, func(p *hookPlan) bool { return !p.noop || !p.recorded() }) {
		// Nothing to change, in the kernel or in the host state: a
		// no-op writes nothing either.
		return nil
	}

	// Mark the hooks about to change before anything is loaded: a
	// backend's Prepare pins what it loads, and should kfm die before the
	// final state is saved, the next run must commit these hooks again
	// (see HookState.Changing) for the backend to remove those pins.
	unmark := func() {
		for _, p := range plans {
			if !p.noop {
				st.put(p.restored())
			}
		}
	}
	if slices.ContainsFunc(plans, func(p *hookPlan) bool { return !p.noop }) {
		for _, p := range plans {
			if !p.noop {
				hs := *p.restored()
				hs.Changing = true
				st.put(&hs)
			}
		}
		if err := m.state.save(st); err != nil {
			unmark()
			return fmt.Errorf("write host state (nothing was changed): %w", err)
		}
	}
	if err := m.prepareAll(ctx, plans); err != nil {
		abortAll()
		unmark()
		if serr := m.state.save(st); serr != nil {
			return fmt.Errorf("%w; write host state: %w", err, serr)
		}
		return err
	}

	m.step("prepared")

	// Write ahead: should kfm die during the commits, the next run knows
	// which running programs are its own.
	for _, p := range plans {
		if p.noop {
			continue
		}
		hs := p.draft()
		hs.Changing = true
		if p.old != nil {
			hs.Elements = p.old.Elements
			// The programs of an interrupted earlier change that run
			// now stay known as kfm's until this change is done.
			for _, pe := range p.old.Pending {
				if p.current != nil && slices.ContainsFunc(p.current.Programs, func(cp bpf.ChainProgram) bool { return cp.ID == pe.ProgramID }) {
					hs.Pending = append(hs.Pending, pe)
				}
			}
		}
		for i, prog := range p.change.Programs() {
			if i < len(p.elems) && p.elems[i] != nil {
				hs.Pending = append(hs.Pending, PendingElement{Name: p.comps[i].Name, Key: p.comps[i].Key, ProgramID: prog.ID})
			}
		}
		st.put(hs)
	}
	if err := m.state.save(st); err != nil {
		abortAll()
		return fmt.Errorf("write host state: %w", err)
	}
	m.step("written-ahead")

	committed := 0
	for i, p := range plans {
		if p.noop {
			continue
		}
		if err := p.change.Commit(ctx); err != nil {
			return m.rollback(ctx, st, plans, i, inHook(p.target, "switch to the new chain", err))
		}
		committed++
		m.step(fmt.Sprintf("committed-%d", committed))
	}

	var errs []error
	var marks []pinCheck
	for _, p := range plans {
		if p.previous != nil && p.target.Netns != "" && p.previous.Name() == "dispatcher" {
			// libxdp's Release goes by ifindex and could take another
			// namespace's dispatcher directory: remove exactly the
			// replaced dispatcher's.
			if p.prevChain != nil && p.prevChain.RootID != 0 {
				if err := os.RemoveAll(dispatcher.PinDir(m.bpffs, p.target.Ifindex, p.prevChain.RootID)); err != nil {
					errs = append(errs, fmt.Errorf("%s: clean up after the dispatcher backend: %w", p.target, err))
				}
			}
		} else if p.previous != nil {
			if err := p.previous.Release(ctx, p.target); err != nil {
				errs = append(errs, fmt.Errorf("%s: clean up after the %s backend: %w", p.target, p.previous.Name(), err))
			}
		}
		if p.old != nil && p.old.Changing {
			if err := m.releaseStrays(ctx, p); err != nil {
				errs = append(errs, err)
			}
		}
		for _, em := range p.maps {
			if err := em.commit(); err != nil {
				errs = append(errs, fmt.Errorf("%s: pin reset maps: %w", p.target, err))
			}
		}
		for _, ec := range p.counters {
			if err := ec.commit(); err != nil {
				errs = append(errs, fmt.Errorf("%s: verdict counters: %w", p.target, err))
			}
		}
		hs := p.final()
		if len(hs.Elements) > 0 {
			// Record the new root: the dispatcher's pins are named
			// after it, and a root that runs on without its pins is
			// recognised by it (see orphanRoot). And the XDP mode the
			// chain runs in, which the next plan reads from the
			// kernel when kfm.yaml names none: recording "" for the
			// default made the first no-op apply after a new chain
			// rewrite the state of every hook.
			if c, err := p.backend.Current(ctx, p.target); err == nil && c != nil {
				hs.RootID = c.RootID
				if c.Mode != "" && !p.target.Hook.IsTC() {
					hs.Mode = c.Mode
				}
			}
		}
		st.put(hs)
		keep := map[string]bool{}
		for _, e := range hs.Elements {
			keep[e.Name] = true
			marks = append(marks, pinCheck{target: p.target, element: e.Name, id: e.ProgramID})
		}
		if err := m.maps.gc(p.target, keep); err != nil {
			errs = append(errs, fmt.Errorf("%s: remove maps of removed programs: %w", p.target, err))
		}
		p.close()
	}
	m.step("cleaned-up")
	if err := m.state.save(st); err != nil {
		errs = append(errs, fmt.Errorf("write host state: %w", err))
	}
	m.step("state-saved")
	m.rememberPins(ctx, marks)
	return errors.Join(errs...)
}

// releaseStrays removes what other backends left pinned for p's hook by an
// interrupted change: kfm killed during a switch of backend, after the new
// backend had pinned its generation but before the state named it, finishes
// the change on the old backend at the next run (the state still names it),
// and nothing else would ever remove the new backend's pins. Only a backend
// that runs nothing on the hook is released, so a chain another kfm backend
// really runs there is never touched. The dispatcher is left out: its pins
// follow libxdp's layout, shared with xdp-loader, and its own Prepare
// removes dispatchers that no longer run.
func (m *Manager) releaseStrays(ctx context.Context, p *hookPlan) error {
	var errs []error
	for _, b := range m.backends {
		name := b.Name()
		if name == "dispatcher" || (p.backend != nil && name == p.backend.Name()) || (p.previous != nil && name == p.previous.Name()) {
			continue
		}
		if _, err := os.Stat(p.target.PinDir(name)); err != nil {
			continue
		}
		nb := m.backendIn(b, p.ns)
		if c, err := nb.Current(ctx, p.target); err != nil || c != nil {
			continue
		}
		if err := nb.Release(ctx, p.target); err != nil {
			errs = append(errs, fmt.Errorf("%s: remove what an interrupted switch to the %s backend left: %w", p.target, name, err))
		}
	}
	return errors.Join(errs...)
}

// rollback undoes plans[:failed] after plans[failed] could not commit.
func (m *Manager) rollback(ctx context.Context, st *State, plans []*hookPlan, failed int, cause error) error {
	var reverted []string
	var errs []error
	for j := failed - 1; j >= 0; j-- {
		if plans[j].noop {
			continue
		}
		if err := plans[j].change.Revert(ctx); err != nil {
			errs = append(errs, withTarget(plans[j].target, err))
		} else {
			reverted = append(reverted, plans[j].target.String())
		}
	}
	for _, p := range plans {
		p.abort()
		st.put(p.restored())
	}
	if err := m.state.save(st); err != nil {
		errs = append(errs, fmt.Errorf("write host state: %w", err))
	}
	err := cause
	if len(reverted) > 0 {
		err = fmt.Errorf("%w; rolled back %s to the previous chain", err, strings.Join(reverted, ", "))
	}
	if len(errs) > 0 {
		err = fmt.Errorf("%w; ROLLBACK FAILED: %w", err, errors.Join(errs...))
	}
	return err
}

// plan works out the backend and the components of one hook.
func (m *Manager) plan(ctx context.Context, st *State, spec HookSpec) (*hookPlan, error) {
	ifc, err := m.target(spec.Netns, spec.Interface, spec.Hook)
	if err != nil {
		return nil, err
	}
	t := ifc.Target
	p := &hookPlan{target: t, ns: ifc.ns, hwaddr: ifc.hwaddr, netnsPath: spec.Netns, old: st.find(spec.Netns, spec.Interface, spec.Hook), resetMaps: spec.ResetMaps, owner: spec.Owner}
	if p.old != nil && !sameInterface(p.old, ifc) {
		// The state is another interface's that had this name or
		// ifindex: nothing of it applies here (prune removes it).
		p.old = nil
	}
	if p.old != nil && p.old.Owner != spec.Owner {
		return nil, fmt.Errorf("%s: %w: it runs the chain of %s", t, ErrNotOwner, ownerName(p.old.Owner))
	}
	prefer := ""
	if p.old != nil {
		prefer = p.old.Backend
	}
	owner, current, err := m.owner(ctx, ifc.ns, t, prefer)
	if owner == nil && (err == nil || errors.Is(err, bpf.ErrForeignProgram)) {
		if p.orphan = m.orphanRoot(ifc, p.old); p.orphan != nil {
			err = nil
		}
	}
	if err != nil {
		return nil, err
	}
	if spec.Owner != "" && p.old == nil && current != nil && len(current.Programs) > 0 {
		return nil, fmt.Errorf("%s: %w: it runs a chain kfm's agent did not install (%s, id %d)", t, ErrNotOwner, current.Programs[0].Name, current.Programs[0].ID)
	}
	if err := m.chooseBackend(p, spec, owner, current); err != nil {
		return nil, err
	}
	p.mode = spec.Mode
	if p.mode == "" && current != nil {
		p.mode = current.Mode
	}
	if p.mode == "" && p.orphan != nil {
		p.mode = p.orphan.Mode
	}
	if spec.Hook.IsTC() {
		p.mode = ""
	}

	// Which running programs are kfm's, by element name and key.
	ours := map[ebpf.ProgramID]PendingElement{}
	if p.old != nil {
		for _, e := range p.old.Elements {
			ours[e.ProgramID] = PendingElement{Name: e.Name, Key: e.Key, ProgramID: e.ProgramID}
		}
		for _, pe := range p.old.Pending {
			ours[pe.ProgramID] = pe
		}
	}
	running := map[string]ebpf.ProgramID{}
	var foreign []bpf.ChainProgram
	if current != nil {
		for _, cp := range current.Programs {
			if e, ok := ours[cp.ID]; ok && cp.ID != 0 {
				running[e.Name+"\x00"+e.Key] = cp.ID
			} else {
				foreign = append(foreign, cp)
			}
		}
	}
	for _, name := range spec.DropForeign {
		if !slices.ContainsFunc(foreign, func(cp bpf.ChainProgram) bool { return cp.Name == name }) {
			return nil, fmt.Errorf("%s: no program %q: %w", t, name, ErrNotInstalled)
		}
	}
	foreign = slices.DeleteFunc(foreign, func(cp bpf.ChainProgram) bool { return slices.Contains(spec.DropForeign, cp.Name) })
	if spec.Owner != "" {
		foreign = nil // the owner's chain is put back as it wants it
	}
	if len(foreign) > 0 && p.previous != nil {
		return nil, fmt.Errorf("%s: program %s (id %d) was loaded by another tool and cannot move to the %s backend: remove it first", t, foreign[0].Name, foreign[0].ID, p.backend.Name())
	}

	type entry struct {
		comp bpf.Component
		elem *Element
	}
	var entries []entry
	for _, cp := range foreign {
		entries = append(entries, entry{comp: bpf.Component{Name: cp.Name, Priority: cp.Priority, ProceedOn: cp.ProceedOn, Running: cp.ID}})
	}
	names := map[string]bool{}
	for _, e := range spec.Elements {
		if names[e.Name] {
			return nil, fmt.Errorf("%s: two programs named %q", t, e.Name)
		}
		names[e.Name] = true
		if slices.ContainsFunc(foreign, func(cp bpf.ChainProgram) bool { return cp.Name == e.Name }) {
			return nil, fmt.Errorf("%s: the name %q is taken by a program another tool loaded: choose another --name", t, e.Name)
		}
		// The CollectionSpec is made in prepare, for hooks that change
		// only: a hook that stays as it is needs no copy of it.
		key := e.key()
		entries = append(entries, entry{elem: e, comp: bpf.Component{
			Name: e.Name, Priority: e.Priority, ProceedOn: e.ProceedOn,
			Function: e.Function, Key: key,
			Running: running[e.Name+"\x00"+key],
		}})
	}
	slices.SortStableFunc(entries, func(a, b entry) int {
		if a.comp.Priority != b.comp.Priority {
			return a.comp.Priority - b.comp.Priority
		}
		return strings.Compare(a.comp.Name, b.comp.Name)
	})
	for _, en := range entries {
		p.comps = append(p.comps, en.comp)
		p.elems = append(p.elems, en.elem)
	}
	p.current = current
	// kfm's chain was here and is gone although no change of kfm's was
	// interrupted: the interface was replaced (or the chain detached by
	// hand). The maps it kept belong to what is gone: start afresh.
	// (An orphan's maps, if still pinned, are the ones it runs with: they
	// are kept.)
	p.vanished = current == nil && p.orphan == nil && p.old != nil && len(p.old.Elements) > 0 && !p.old.Changing
	// A hook an interrupted apply was changing is committed again, so that
	// the backend removes what that apply left pinned; an orphan is always
	// replaced or detached.
	p.noop = p.unchanged(spec) && (p.old == nil || !p.old.Changing) && p.orphan == nil
	if p.noop && p.vanished && len(p.comps) == 0 {
		// The hook should run nothing and no backend reads kfm's chain
		// there any more (its pins are gone), but what the chain's
		// backend left attached (classic tc filters) may still run: a
		// removal through that backend takes it off.
		if b, err := m.backend(p.old.Backend); err == nil {
			p.backend, p.noop = m.backendIn(b, p.ns), false
		}
	}
	return p, nil
}

// repinMaps pins again the maps of the plans' running kfm programs whose
// pins were removed (see mapStore.repinMaps), and tells the user. The
// check runs for every program of every hook, also in a no-op apply, so
// it runs on several goroutines (see forEach); the few maps it finds are
// pinned again in order.
func (m *Manager) repinMaps(ctx context.Context, plans []*hookPlan) {
	type check struct {
		p       *hookPlan
		i       int
		missing map[ebpf.MapID]string
	}
	var checks []check
	for _, p := range plans {
		for i, c := range p.comps {
			if p.elems[i] != nil && c.Running != 0 {
				checks = append(checks, check{p: p, i: i})
			}
		}
	}
	forEach(ctx, len(checks), func(i int) {
		c := &checks[i]
		_, c.missing = m.unpinned(c.p.target, c.p.comps[c.i].Name, c.p.comps[c.i].Running)
	})
	m.savePinMarks()
	for _, ch := range checks {
		if len(ch.missing) == 0 {
			continue
		}
		p, c, e := ch.p, ch.p.comps[ch.i], ch.p.elems[ch.i]
		spec, err := e.Object.Spec(e.Params)
		if err != nil {
			spec = nil
		}
		done, err := m.maps.repinMaps(p.target, c.Name, ch.missing, spec)
		if len(done) > 0 {
			m.notify(fmt.Sprintf("%s: %s: pinned %s again (the pins had been removed)", p.target, c.Name, strings.Join(done, ", ")))
		}
		if err != nil {
			m.notify(fmt.Sprintf("%s: %s: %v", p.target, c.Name, err))
		}
	}
}

// recorded reports whether the host state holds exactly what the hook's
// state would be after the plan commits (then a no-op need not write it).
func (p *hookPlan) recorded() bool {
	if p.old == nil {
		return len(p.elems) == 0
	}
	return reflect.DeepEqual(p.final(), p.old)
}

// restored is the hook's state as the apply found it.
func (p *hookPlan) restored() *HookState {
	if p.old != nil {
		return p.old
	}
	hs := p.draft()
	hs.Backend, hs.Reason, hs.Mode = "", "", ""
	return hs
}

// unchanged reports whether the hook already runs exactly the planned chain:
// the same programs (same code and params, still loaded) in the same order
// with the same priorities and verdicts, on the same backend and mode.
// Applying it again must change nothing, not even program IDs.
func (p *hookPlan) unchanged(spec HookSpec) bool {
	if p.previous != nil {
		return false
	}
	if p.current == nil {
		return len(p.comps) == 0
	}
	if spec.Mode != "" && spec.Mode != p.current.Mode {
		return false
	}
	if len(p.current.Programs) != len(p.comps) {
		return false
	}
	for i, c := range p.comps {
		cp := p.current.Programs[i]
		if c.Running == 0 || c.Running != cp.ID || c.Priority != cp.Priority || !slices.Equal(c.ProceedOn, cp.ProceedOn) {
			return false
		}
	}
	return true
}

func (m *Manager) chooseBackend(p *hookPlan, spec HookSpec, owner Backend, current *bpf.Chain) error {
	keep := owner != nil && (spec.Backend == "" || spec.Backend == BackendAuto || spec.Backend == owner.Name())
	if keep {
		p.backend = owner
		switch {
		case p.old != nil && p.old.Backend == owner.Name() && p.old.Reason != "":
			p.reason = p.old.Reason
		default:
			p.reason = "the chain already ran on " + owner.Name()
		}
		return nil
	}
	b, reason, err := m.selectBackend(spec.Hook, spec.Backend)
	if err != nil {
		return err
	}
	p.backend, p.reason = m.backendIn(b, p.ns), reason
	if owner != nil {
		p.previous, p.prevChain = owner, current
	}
	return nil
}

// prepareAll prepares every plan that changes, several hooks at a time.
//
// Loading is the bulk of an apply (the verifier runs once per program
// instance, and every chain has instances of its own: they reference the
// chain's PROG_ARRAY or its elements' state maps, so two chains never
// share one), and the kernel verifies loads from different threads in
// parallel. Hooks are independent until commit: each has its own pins,
// maps and backend change, and the backends may be shared by goroutines.
// So up to GOMAXPROCS hooks prepare at once; the transaction does not
// change: commits stay sequential and start only once every hook has
// prepared. On the first failure the others are cancelled, all are waited
// for, and that failure is returned (the caller aborts every plan).
func (m *Manager) prepareAll(ctx context.Context, plans []*hookPlan) error {
	var todo []*hookPlan
	for _, p := range plans {
		if !p.noop {
			todo = append(todo, p)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(todo))
	if workers <= 1 {
		for _, p := range todo {
			if err := m.prepare(ctx, p); err != nil {
				return err
			}
		}
		return nil
	}
	// The workers run in the caller's network namespace. A caller may have
	// entered one on its own thread only (internal/netns's Do does, and
	// so may a program that embeds chain), and the hooks' interfaces are
	// there; a new goroutine could run on any thread of the process.
	runtime.LockOSThread()
	here, err := netns.Get()
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("get the current network namespace: %w", err)
	}
	defer here.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
			cancel(err)
		}
		mu.Unlock()
	}
	work := make(chan *hookPlan)
	for range workers {
		wg.Go(func() {
			runtime.LockOSThread()
			if err := enter(here); err != nil {
				fail(err)
				for range work {
				}
				return // the thread stays locked, and ends with the goroutine
			}
			for p := range work {
				if ctx.Err() != nil {
					continue
				}
				if err := m.prepare(ctx, p); err != nil {
					fail(err)
				}
			}
		})
	}
	for _, p := range todo {
		work <- p
	}
	close(work)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		// Cancelled from outside before every hook prepared.
		return context.Cause(ctx)
	}
	return first
}

// enter puts the calling goroutine's thread, locked by the caller, into
// the network namespace ns. A thread already there is unlocked again; one
// that had to change namespace stays locked, so that it ends with its
// goroutine and no other goroutine runs in that namespace by accident.
func enter(ns netns.NsHandle) error {
	cur, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get the current network namespace: %w", err)
	}
	same := cur.Equal(ns)
	cur.Close()
	if same {
		runtime.UnlockOSThread()
		return nil
	}
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter the caller's network namespace: %w", err)
	}
	return nil
}

// prepare opens the state maps and loads the new chain.
func (m *Manager) prepare(ctx context.Context, p *hookPlan) error {
	if p.vanished {
		if err := m.maps.gc(p.target, nil); err != nil {
			return withTarget(p.target, fmt.Errorf("remove the maps of a chain that no longer runs: %w", err))
		}
	}
	for i := range p.comps {
		c := &p.comps[i]
		e := p.elems[i]
		if e == nil {
			continue // another tool's program, running already
		}
		cs, err := e.Object.Spec(e.Params)
		if err != nil {
			return withTarget(p.target, err)
		}
		// What the kernel lacks is said before the verifier runs (and
		// before any hook of the transaction switches).
		rep, err := compat.Check(cs, e.Function, e.MinKernel)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", p.target, e.Name, err)
		}
		if err := rep.Err(); err != nil {
			return fmt.Errorf("%s: %s: %w", p.target, e.Name, err)
		}
		for name := range cs.Programs {
			if name != e.Function {
				delete(cs.Programs, name)
			}
		}
		c.Spec = cs
		em, err := m.maps.prepare(p.target, c.Name, c.Spec, p.resetMaps)
		if err != nil {
			return withTarget(p.target, err)
		}
		p.maps = append(p.maps, em)
		c.Maps = em.maps
		ec, err := m.maps.prepareCounters(p.target, c.Name, p.elems[i] == nil || !p.elems[i].NoCounters)
		if err != nil {
			return withTarget(p.target, err)
		}
		p.counters = append(p.counters, ec)
		c.Counters = ec.m
	}
	replace := p.prevChain
	if p.orphan != nil {
		m.notify(fmt.Sprintf("%s: kfm's %s chain runs without its pins (root program %d): replacing it", p.target, p.orphan.Backend, p.orphan.RootID))
		if len(p.comps) == 0 {
			d, err := newOrphanDetach(p.target, p.ns, p.orphan)
			if err != nil {
				return err
			}
			p.change = d
			return nil
		}
		replace = p.orphan
	}
	change, err := p.backend.Prepare(ctx, p.target, p.comps, bpf.PrepareOptions{XDPMode: p.mode, Replace: replace})
	// The programs are loaded (or the prepare failed): their specs are not
	// needed any more. A transaction over many hooks would otherwise keep
	// every program's instructions, BTF and map definitions until its last
	// commit, so that memory grew with the number of chains.
	for i := range p.comps {
		p.comps[i].Spec = nil
	}
	if err != nil {
		return fmt.Errorf("%s (%s backend): %w", p.target, p.backend.Name(), err)
	}
	p.change = change
	return nil
}

func (p *hookPlan) draft() *HookState {
	hs := &HookState{
		Netns: p.netnsPath, NetnsID: string(p.ns.id),
		Interface: p.target.Interface, Ifindex: p.target.Ifindex, Hook: p.target.Hook, HWAddr: p.hwaddr,
		Backend: p.backend.Name(), Reason: p.reason, Mode: p.mode, Owner: p.owner,
	}
	if p.current != nil {
		hs.RootID = p.current.RootID
	}
	return hs
}

// final is the hook's state after a successful commit.
func (p *hookPlan) final() *HookState {
	hs := p.draft()
	if p.change != nil {
		hs.RootID = 0 // the change may have a new root (set by the caller)
	}
	var progs []bpf.ChainProgram
	if p.change != nil {
		progs = p.change.Programs()
	} else if p.current != nil {
		progs = p.current.Programs
	}
	for i, e := range p.elems {
		if e == nil {
			continue
		}
		var id ebpf.ProgramID
		if i < len(progs) {
			id = progs[i].ID
		}
		hs.Elements = append(hs.Elements, &ElementState{
			Name: e.Name, Source: e.Source, Digest: e.Digest, Object: e.Object.SHA256,
			Function: e.Function, Priority: e.Priority, ProceedOn: e.ProceedOn.Names(p.target.Hook),
			Params: e.Params, Key: p.comps[i].Key, ProgramID: id, Metrics: e.Metrics,
			Counters: !e.NoCounters,
		})
	}
	return hs
}

// abort drops everything the plan loaded or pinned.
func (p *hookPlan) abort() {
	if p.change != nil {
		p.change.Close()
		p.change = nil
	}
	for _, em := range p.maps {
		em.abort()
	}
	p.maps = nil
	for _, ec := range p.counters {
		ec.abort()
	}
	p.counters = nil
}

// close releases the plan's references after a commit.
func (p *hookPlan) close() {
	if p.change != nil {
		p.change.Close()
		p.change = nil
	}
	for _, em := range p.maps {
		em.close()
	}
	p.maps = nil
	for _, ec := range p.counters {
		ec.close()
	}
	p.counters = nil
}

// withTarget prefixes err with the hook it is about, unless err starts
// with it already (the backends name the hook themselves).
func withTarget(t bpf.Target, err error) error {
	if strings.HasPrefix(err.Error(), t.String()+":") || strings.HasPrefix(err.Error(), t.String()+" ") {
		return err
	}
	return fmt.Errorf("%s: %w", t, err)
}

// inHook is err as the failure of step on hook t: "t: step: err", with the
// hook named once when err starts with it.
func inHook(t bpf.Target, step string, err error) error {
	return &hookError{msg: t.String() + ": " + step + ": " + strings.TrimPrefix(err.Error(), t.String()+": "), err: err}
}

type hookError struct {
	msg string
	err error
}

func (e *hookError) Error() string { return e.msg }
func (e *hookError) Unwrap() error { return e.err }
