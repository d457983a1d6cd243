package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry"
)

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// Locked installs exactly what kfm.lock pins: it refuses to run when
	// the lock does not satisfy kfm.yaml, pulls by digest only and
	// requires every locked signer to have signed again.
	Locked bool
	// DryRun plans and reports, and changes nothing (neither the kernel
	// nor the files).
	DryRun bool
	// LockOnly resolves and writes kfm.lock without touching the kernel
	// (kfm lock, kfm update --no-apply).
	LockOnly bool
	// Update names programs to resolve again (newest versions for
	// ranges, current digests for tags) whatever the lock says; All
	// updates every program.
	Update    []string
	UpdateAll bool
	ResetMaps bool
	// Netns, when set (a NAME or PATH as for --netns), limits the kernel
	// changes to the chains of that network namespace; kfm.lock is still
	// locked as a whole. Empty applies every chain of every namespace.
	Netns string
}

// Change is what an apply does (or, with DryRun, would do) to one hook.
type Change struct {
	Netns     string   `json:"netns,omitempty"`
	Interface string   `json:"interface"`
	Hook      bpf.Hook `json:"hook"`
	Backend   string   `json:"backend"`
	Added     []string `json:"added,omitempty"`
	Removed   []string `json:"removed,omitempty"`
	Moved     []string `json:"moved,omitempty"`
	Updated   []string `json:"updated,omitempty"`
	// Recovered is set when the hook runs the wanted chain already but an
	// earlier kfm was interrupted while changing it: the chain is
	// committed again (reloaded) so that the backend removes the
	// interrupted change's leftovers.
	Recovered bool `json:"recovered,omitempty"`
	// Order is the chain after the change, in run order.
	Order []string `json:"order"`
}

// Unchanged reports whether the hook stays as it is.
func (c Change) Unchanged() bool {
	return len(c.Added)+len(c.Removed)+len(c.Moved)+len(c.Updated) == 0 && !c.Recovered
}

// ApplyResult reports an apply.
type ApplyResult struct {
	Changes []Change `json:"changes"`
	// LockChanged says whether kfm.lock was (or would be) rewritten.
	LockChanged bool  `json:"lockChanged"`
	Lock        *Lock `json:"-"`
}

// Apply makes the kernel run what kfm.yaml asks for, as kfm.lock pins it.
// Unless opts.Locked, it re-locks first: tags are resolved again (a moved
// tag moves the lock), ranges keep their locked version (Update moves them),
// files and digests stay, and programs the lock does not satisfy are locked
// anew.
// Hooks kfm manages that kfm.yaml no longer names are emptied. Every hook is
// loaded before the first one switches; see apply. Applying a lock the
// kernel already runs changes nothing.
func (m *Manager) Apply(ctx context.Context, opts ApplyOptions) (*ApplyResult, error) {
	lock, err := m.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	defer m.beginView()()
	var st *State
	if !opts.DryRun && !opts.LockOnly {
		if st, err = m.state.load(); err != nil {
			return nil, err
		}
		m.pruneFirst(st) // (updates st as it saves it)
	}
	man, lk, lockText, err := m.loadProjectText()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(m.manifestPath()); err != nil {
		return nil, fmt.Errorf("no manifest: %w (install a program with kfm install, or point --config-dir at the directory of kfm.yaml)", err)
	}
	if opts.Locked {
		if _, err := os.Stat(m.lockPath()); err != nil {
			return nil, fmt.Errorf("apply --locked needs a lock: %w (run kfm lock)", err)
		}
		if err := lk.Satisfies(man); err != nil {
			return nil, fmt.Errorf("%s: %w", m.lockPath(), err)
		}
	}
	relock := func(name string) bool { return opts.UpdateAll || slices.Contains(opts.Update, name) }
	for _, n := range opts.Update {
		if !slices.ContainsFunc(man.Chains, func(c ChainSpec) bool {
			return slices.ContainsFunc(c.Programs, func(p ProgramSpec) bool { return p.Name == n })
		}) {
			return nil, fmt.Errorf("%s: no program named %q: %w", m.manifestPath(), n, ErrNotInstalled)
		}
	}

	if st == nil {
		if st, err = m.state.load(); err != nil {
			return nil, err
		}
	}
	// An apply that only takes programs away does not ask the trust
	// policy about those that stay (see removesOnly).
	keptElems, keptChains, removesOnly, err := m.removesOnly(ctx, st, man, lk, opts)
	if err != nil {
		return nil, err
	}

	newLock := &Lock{Version: LockVersion}
	var specs []HookSpec
	for i := range man.Chains {
		cs := &man.Chains[i]
		var elements []*Element
		var lc LockedChain
		if removesOnly {
			elements, lc = keptElems[i], keptChains[i]
		} else if opts.Locked {
			lc = *lk.ChainIn(cs.NetnsPath(), cs.Interface, cs.Hook)
			for _, lp := range lc.Programs {
				e, err := m.sources.Element(ctx, &lc, lp, true)
				if err != nil {
					return nil, err
				}
				e.NoCounters = !lp.CountersOn()
				elements = append(elements, e)
			}
		} else {
			var err error
			if elements, lc, err = m.chainElements(ctx, cs, lk, nil, relock, refreshTags); err != nil {
				return nil, err
			}
		}
		newLock.putLocked(lc)
		specs = append(specs, HookSpec{Netns: cs.NetnsPath(), Interface: cs.Interface, Hook: cs.Hook, Backend: cs.Backend, Mode: cs.Mode, Elements: elements, ResetMaps: opts.ResetMaps})
	}

	var only *string
	if opts.Netns != "" {
		p, err := NetnsPath(opts.Netns)
		if err != nil {
			return nil, err
		}
		only = &p
	}
	// Hooks kfm runs that kfm.yaml no longer names.
	for _, hs := range st.Hooks {
		if man.ChainIn(hs.Netns, hs.Interface, hs.Hook) != nil || hs.Owner != "" {
			continue // named, or the agent's
		}
		if _, err := m.target(hs.Netns, hs.Interface, hs.Hook); errors.Is(err, ErrNoInterface) || errors.Is(err, ErrNoNetns) {
			continue // the interface is gone, and its chain with it
		}
		specs = append(specs, HookSpec{Netns: hs.Netns, Interface: hs.Interface, Hook: hs.Hook})
	}
	if only != nil {
		specs = slices.DeleteFunc(specs, func(s HookSpec) bool { return s.Netns != *only })
	}

	res := &ApplyResult{Lock: newLock}
	var newText []byte
	if !opts.Locked {
		// apply --locked never rewrites kfm.lock (and encoding two
		// locks of 300 chains was a third of a no-op's time). The new
		// lock is encoded once, and compared with the file's bytes: a
		// lock kfm wrote is its encoding (one edited by hand into
		// another layout is written again, as kfm writes it).
		if newText, err = newLock.Marshal(); err != nil {
			return nil, err
		}
		if lockText == nil {
			lockText, _ = lk.Marshal()
		}
		res.LockChanged = !bytes.Equal(lockText, newText)
	}
	if opts.LockOnly {
		if !opts.DryRun && res.LockChanged {
			if err := m.saveProjectText(nil, newLock, newText); err != nil {
				return nil, err
			}
		}
		return res, nil
	}
	if res.Changes, err = m.describe(ctx, st, specs); err != nil {
		return nil, err
	}
	if opts.DryRun {
		return res, nil
	}
	if err := m.apply(ctx, st, specs); err != nil {
		return nil, err
	}
	if res.LockChanged && !opts.Locked {
		if err := m.saveProjectText(nil, newLock, newText); err != nil {
			return nil, fmt.Errorf("the chains are applied, but: %w", err)
		}
	}
	m.step("files-saved")
	return res, nil
}

// describe plans every hook (loading nothing) and says what would change.
func (m *Manager) describe(ctx context.Context, st *State, specs []HookSpec) ([]Change, error) {
	var out []Change
	for _, spec := range specs {
		p, err := m.plan(ctx, st, spec)
		if err != nil {
			return nil, err
		}
		c := Change{Netns: spec.Netns, Interface: spec.Interface, Hook: spec.Hook, Backend: p.backend.Name(), Order: []string{}}
		before := map[string]int{}
		keys := map[string]string{}
		if p.current != nil {
			names := currentNames(p)
			for i, n := range names {
				before[n] = i
			}
			if p.old != nil {
				for _, e := range p.old.Elements {
					keys[e.Name] = e.Key
				}
			}
		}
		for i, comp := range p.comps {
			c.Order = append(c.Order, comp.Name)
			pos, was := before[comp.Name]
			switch {
			case !was:
				c.Added = append(c.Added, comp.Name)
			case p.elems[i] != nil && keys[comp.Name] != comp.Key:
				c.Updated = append(c.Updated, comp.Name)
			case pos != i:
				c.Moved = append(c.Moved, comp.Name)
			}
			delete(before, comp.Name)
		}
		for n := range before {
			c.Removed = append(c.Removed, n)
		}
		slices.Sort(c.Removed)
		c.Recovered = !p.noop && p.old != nil && p.old.Changing && c.Unchanged()
		if p.previous != nil && len(c.Order) > 0 && c.Unchanged() {
			c.Moved = c.Order // a backend switch reloads everything
		}
		out = append(out, c)
	}
	return out, nil
}

// currentNames names the running programs of a plan's hook the way the
// plan names components: kfm's by element name, others by kernel name.
func currentNames(p *hookPlan) []string {
	byID := map[uint32]string{}
	if p.old != nil {
		for _, e := range p.old.Elements {
			byID[uint32(e.ProgramID)] = e.Name
		}
		for _, pe := range p.old.Pending {
			byID[uint32(pe.ProgramID)] = pe.Name
		}
	}
	var out []string
	for _, cp := range p.current.Programs {
		if n, ok := byID[uint32(cp.ID)]; ok {
			out = append(out, n)
		} else {
			out = append(out, cp.Name)
		}
	}
	return out
}

// Outdated is one program with a newer version available.
type Outdated struct {
	Interface string   `json:"interface"`
	Hook      bpf.Hook `json:"hook"`
	Name      string   `json:"name"`
	Ref       string   `json:"ref"`
	// Current is the locked tag, Wanted the newest tag the manifest's
	// range allows, Latest the newest semver tag of the repository.
	Current string `json:"current"`
	Wanted  string `json:"wanted"`
	Latest  string `json:"latest"`
	// Moved is set when the locked tag now points at other content.
	Moved bool `json:"moved,omitempty"`
}

// Outdated lists the registry programs of kfm.yaml for which the registry
// has newer versions than kfm.lock pins (or whose tag moved).
func (m *Manager) Outdated(ctx context.Context) ([]Outdated, error) {
	man, lk, err := m.loadProject()
	if err != nil {
		return nil, err
	}
	out := []Outdated{}
	for _, cs := range man.Chains {
		lc := lk.ChainIn(cs.NetnsPath(), cs.Interface, cs.Hook)
		for _, p := range cs.Programs {
			if p.Ref == "" {
				continue
			}
			o := Outdated{Interface: cs.Interface, Hook: cs.Hook, Name: p.Name, Ref: p.Ref}
			var lp *LockedProgram
			if lc != nil {
				if i := slices.IndexFunc(lc.Programs, func(x LockedProgram) bool { return x.Name == p.Name }); i >= 0 {
					lp = &lc.Programs[i]
				}
			}
			repo, constraint, isRange := splitRange(p.Ref)
			if !isRange {
				ref, err := registry.ParseReference(p.Ref)
				if err != nil || ref.Tag == "" {
					continue // pinned by digest: never outdated
				}
				repo = ref.Repo()
			}
			tags, err := m.sources.tags(ctx, repo)
			if err != nil {
				return nil, err
			}
			if lp != nil && lp.Resolved != "" {
				o.Current = strings.TrimPrefix(lp.Resolved, repo+":")
			}
			o.Latest = newest(tags, nil)
			if isRange {
				c, err := semver.NewConstraint(constraint)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", p.Name, err)
				}
				o.Wanted = newest(tags, c)
			} else {
				o.Wanted = o.Current
				if lp != nil && lp.Digest != "" {
					ref, _ := registry.ParseReference(p.Ref)
					_, desc, err := m.sources.Registry.Resolve(ctx, ref, registry.PullOptions{Offline: m.sources.Offline})
					if err == nil && desc.Digest.String() != lp.Digest {
						o.Moved = true
					}
				}
			}
			if o.Moved || (o.Wanted != "" && o.Wanted != o.Current) || (o.Latest != "" && o.Latest != o.Current && semverNewer(o.Latest, o.Current)) {
				out = append(out, o)
			}
		}
	}
	return out, nil
}

func newest(tags []string, c *semver.Constraints) string {
	var best *semver.Version
	var bestTag string
	for _, t := range tags {
		v, err := semver.NewVersion(t)
		if err != nil || (c != nil && !c.Check(v)) {
			continue
		}
		if best == nil || v.GreaterThan(best) {
			best, bestTag = v, t
		}
	}
	return bestTag
}

func semverNewer(a, b string) bool {
	va, err := semver.NewVersion(a)
	if err != nil {
		return false
	}
	vb, err := semver.NewVersion(b)
	if err != nil {
		return true
	}
	return va.GreaterThan(vb)
}
