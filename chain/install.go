package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry"
)

// InstallRequest adds a program to a hook, or replaces the program of the
// same name.
type InstallRequest struct {
	Interface string
	// Netns is the interface's network namespace: "" for the one kfm runs
	// in, a NAME (/run/netns/NAME) or a PATH.
	Netns string
	// Hook defaults to the program type's hook (xdp, or tc-ingress for
	// TC programs).
	Hook bpf.Hook
	// Backend: "", "auto" or a backend name (see HookSpec.Backend).
	Backend string
	// Mode is the XDP attach mode: "" (keep, else native), native, skb.
	Mode string
	// Source is a local object file or a registry reference (tag, digest
	// or semver range).
	Source string
	// Function selects the entry function (default: the only one).
	Function string
	// Name defaults to the function name.
	Name string
	// Priority and ProceedOn default to the bundle's defaults, else the
	// object's libxdp XDP_RUN_CONFIG metadata, else 50 and the hook's
	// pass verdict.
	Priority *int
	// ProceedOn names verdicts of the hook ("pass,drop").
	ProceedOn string
	// Params are values for the object's volatile const globals.
	Params    map[string]string
	ResetMaps bool
	// Counters, when set, switches the program's verdict counters on or
	// off (kfm.yaml's counters); nil leaves the chain's setting.
	Counters *bool
}

// programSpec turns the request into the kfm.yaml entry. A source that is
// an existing file is a path (made absolute: the manifest outlives the
// working directory); anything else must be a registry reference.
func (r InstallRequest) programSpec() (ProgramSpec, error) {
	ps := ProgramSpec{Name: r.Name, Function: r.Function, Priority: r.Priority, Params: r.Params, Counters: r.Counters}
	if r.ProceedOn != "" {
		for _, a := range strings.Split(r.ProceedOn, ",") {
			if a = strings.TrimSpace(a); a != "" {
				ps.ProceedOn = append(ps.ProceedOn, a)
			}
		}
	}
	if st, err := os.Stat(r.Source); err == nil && !st.IsDir() {
		abs, err := filepath.Abs(r.Source)
		if err != nil {
			return ps, err
		}
		ps.Path = abs
		return ps, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ps, err
	}
	if _, err := registry.ParseReference(r.Source); err != nil {
		if _, _, ok := splitRange(r.Source); !ok {
			if strings.HasSuffix(r.Source, ".o") || strings.HasPrefix(r.Source, ".") || strings.HasPrefix(r.Source, "/") {
				return ps, fmt.Errorf("%s: no such object file", r.Source)
			}
			return ps, fmt.Errorf("%q is neither an object file nor a registry reference (host/repository:tag): %w", r.Source, err)
		}
	}
	ps.Ref = r.Source
	return ps, nil
}

// manifestPath and lockPath are kfm.yaml and kfm.lock in the config dir.
func (m *Manager) manifestPath() string { return filepath.Join(m.configDir, "kfm.yaml") }
func (m *Manager) lockPath() string     { return filepath.Join(m.configDir, "kfm.lock") }

// loadProject reads kfm.yaml and kfm.lock; missing files are empty.
func (m *Manager) loadProject() (*Manifest, *Lock, error) {
	man, lk, _, err := m.loadProjectText()
	return man, lk, err
}

// loadProjectText is loadProject, and kfm.lock's bytes (nil without one).
func (m *Manager) loadProjectText() (*Manifest, *Lock, []byte, error) {
	man, err := m.loadManifest()
	if errors.Is(err, fs.ErrNotExist) {
		man, err = &Manifest{Version: ManifestVersion}, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	lk, text, err := m.loadLockText()
	if errors.Is(err, fs.ErrNotExist) {
		lk, text, err = &Lock{Version: LockVersion}, nil, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return man, lk, text, nil
}

// saveProject writes kfm.yaml, then kfm.lock, each atomically, and keeps
// their parses in the state directory (see parsed.go): the status or no-op
// apply that usually follows a change then finds them there instead of
// parsing a large lock itself (60 ms at 300 chains of 5, in the change's
// seconds a small part).
func (m *Manager) saveProject(man *Manifest, lk *Lock) error {
	return m.saveProjectText(man, lk, nil)
}

// saveProjectText is saveProject with kfm.lock's text, when the caller has
// it already (lk.Marshal's, encoding a lock of 300 chains takes 250 ms).
func (m *Manager) saveProjectText(man *Manifest, lk *Lock, lockText []byte) error {
	if man != nil {
		b, err := man.Marshal()
		if err != nil {
			return err
		}
		if err := writeFileAtomic(m.manifestPath(), b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", m.manifestPath(), err)
		}
		_, _ = m.loadManifest()
	}
	if lk != nil {
		b := lockText
		if b == nil {
			var err error
			if b, err = lk.Marshal(); err != nil {
				return err
			}
		}
		if err := writeFileAtomic(m.lockPath(), b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", m.lockPath(), err)
		}
		_, _ = m.loadLock()
	}
	return nil
}

// satisfiedBy reports whether a locked program still is what the manifest
// program asks for.
func satisfiedBy(hook bpf.Hook, p ProgramSpec, lp LockedProgram) bool {
	switch {
	case p.Name != lp.Name, p.Ref != lp.Ref, p.Path != lp.Path:
		return false
	case p.Function != "" && p.Function != lp.Function:
		return false
	case p.Priority != nil && *p.Priority != lp.Priority:
		return false
	case len(p.ProceedOn) > 0 && !sameActions(hook, p.ProceedOn, lp.ProceedOn):
		return false
	}
	// The lock keeps params as the manifest writes them.
	return maps.Equal(p.Params, lp.Params) || (len(p.Params) == 0 && len(lp.Params) == 0)
}

// lockMode says how chainElements treats programs the lock already pins.
type lockMode int

const (
	// keepLocked keeps every locked program that still satisfies the
	// manifest, by digest (install and remove: re-lock only what changed).
	keepLocked lockMode = iota
	// refreshTags re-resolves tags: a tag reference locks the digest the
	// tag names now, a range keeps its locked version but re-resolves that
	// version's tag; digests and files stay (kfm apply, kfm lock).
	refreshTags
)

// chainElements builds the elements of a manifest chain and its locked
// form. Programs in fresh are taken as given; relock names programs to
// resolve from scratch (kfm update: ranges move to their newest version).
// The others come from the lock when it still satisfies the manifest, as
// mode says, or are locked anew.
func (m *Manager) chainElements(ctx context.Context, cs *ChainSpec, lk *Lock, fresh map[string]lockedElement, relock func(string) bool, mode lockMode) ([]*Element, LockedChain, error) {
	lc := LockedChain{Interface: cs.Interface, Netns: cs.Netns, Hook: cs.Hook, Backend: cs.Backend, Mode: cs.Mode}
	old := lk.ChainIn(cs.NetnsPath(), cs.Interface, cs.Hook)
	// Programs that stay running by their locked digest are not verified
	// again (see keptElement).
	var running map[string]string
	if mode == keepLocked {
		st, err := m.state.load()
		if err != nil {
			return nil, lc, err
		}
		running = runningDigests(st, cs.NetnsPath(), cs.Interface, cs.Hook)
	}
	var elements []*Element
	add := func(lp LockedProgram, e *Element) {
		i := slices.IndexFunc(cs.Programs, func(p ProgramSpec) bool { return p.Name == lp.Name })
		if i >= 0 {
			on := cs.CountersOn(cs.Programs[i])
			lp.Counters, e.NoCounters = lockCounters(on), !on
		}
		elements = append(elements, e)
		lc.Programs = append(lc.Programs, lp)
	}
	for _, p := range cs.Programs {
		if f, ok := fresh[p.Name]; ok {
			add(f.lp, f.e)
			continue
		}
		var locked *LockedProgram
		if old != nil && (relock == nil || !relock(p.Name)) {
			if i := slices.IndexFunc(old.Programs, func(lp LockedProgram) bool { return lp.Name == p.Name }); i >= 0 && satisfiedBy(cs.Hook, p, old.Programs[i]) {
				locked = &old.Programs[i]
			}
		}
		switch {
		case locked != nil && mode == refreshTags && locked.Ref != "" && locked.Resolved != "":
			// Re-resolve the locked tag (for a range: the locked
			// version's tag), keep the manifest's reference.
			q := p
			q.Ref = locked.Resolved
			lp, e, err := m.sources.LockProgram(ctx, cs, q)
			if err != nil {
				return nil, lc, err
			}
			lp.Ref = p.Ref
			add(lp, e)
			continue
		case locked != nil:
			var e *Element
			var err error
			if runsNow(running, *locked) {
				e, err = m.sources.keptElement(ctx, old, *locked)
			} else {
				e, err = m.sources.Element(ctx, old, *locked, false)
			}
			if err == nil {
				add(*locked, e)
				continue
			}
			if !errors.Is(err, ErrObjectChanged) {
				return nil, lc, err
			}
			// A local file changed: lock it anew.
		}
		lp, e, err := m.sources.LockProgram(ctx, cs, p)
		if err != nil {
			return nil, lc, err
		}
		add(lp, e)
	}
	return elements, lc, nil
}

type lockedElement struct {
	lp LockedProgram
	e  *Element
}

// putLocked replaces the lock's chain for lc's hook (removing it when it
// has no programs).
func (l *Lock) putLocked(lc LockedChain) {
	l.Chains = slices.DeleteFunc(l.Chains, func(c LockedChain) bool {
		return c.NetnsPath() == lc.NetnsPath() && c.Interface == lc.Interface && c.Hook == lc.Hook
	})
	if len(lc.Programs) > 0 {
		l.Chains = append(l.Chains, lc)
	}
}

// putChain replaces the manifest's chain for cs's hook (removing it when it
// has no programs).
func (man *Manifest) putChain(cs ChainSpec) {
	man.Chains = slices.DeleteFunc(man.Chains, func(c ChainSpec) bool {
		return c.NetnsPath() == cs.NetnsPath() && c.Interface == cs.Interface && c.Hook == cs.Hook
	})
	if len(cs.Programs) > 0 {
		man.Chains = append(man.Chains, cs)
	}
}

// Install adds the program to its hook, or replaces the program of the same
// name, in one atomic change of the hook: it records the program in
// kfm.yaml, locks it (pulls and verifies a registry program) in kfm.lock,
// and applies the hook. Everything else on the hook keeps running (programs
// kept are not reloaded where the backend allows). If the apply fails,
// kfm.yaml and kfm.lock are not changed.
func (m *Manager) Install(ctx context.Context, r InstallRequest) (*HookStatus, error) {
	ps, err := r.programSpec()
	if err != nil {
		return nil, err
	}
	netnsPath, err := NetnsPath(r.Netns)
	if err != nil {
		return nil, err
	}
	st, release, err := m.lockState(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	m.pruneFirst(st)
	man, lk, err := m.loadProject()
	if err != nil {
		return nil, err
	}
	lp, e, hook, err := m.sources.lockProgram(ctx, r.Hook, ps)
	if err != nil {
		return nil, err
	}
	ps.Name = lp.Name

	cs := ChainSpec{Interface: r.Interface, Netns: r.Netns, Hook: hook}
	if c := man.ChainIn(netnsPath, r.Interface, hook); c != nil {
		cs = *c
		cs.Programs = slices.Clone(c.Programs)
	}
	if r.Backend != "" && r.Backend != BackendAuto {
		cs.Backend = r.Backend
	}
	if r.Mode != "" {
		cs.Mode = r.Mode
	}
	if i := slices.IndexFunc(cs.Programs, func(p ProgramSpec) bool { return p.Name == ps.Name }); i >= 0 {
		cs.Programs[i] = ps
	} else {
		cs.Programs = append(cs.Programs, ps)
	}
	elements, lc, err := m.chainElements(ctx, &cs, lk, map[string]lockedElement{ps.Name: {lp, e}}, nil, keepLocked)
	if err != nil {
		return nil, err
	}
	spec := HookSpec{Netns: netnsPath, Interface: r.Interface, Hook: hook, Backend: r.Backend, Mode: cs.Mode, Elements: elements, ResetMaps: r.ResetMaps}
	if err := m.apply(ctx, st, []HookSpec{spec}); err != nil {
		return nil, err
	}
	man.putChain(cs)
	lk.putLocked(lc)
	if err := m.saveProject(man, lk); err != nil {
		return nil, fmt.Errorf("the chain is installed, but: %w", err)
	}
	m.step("files-saved")
	return m.hookStatus(ctx, st, netnsPath, r.Interface, hook)
}

// Remove takes the program called name off the hook (hook "" finds it on
// any hook of the interface) and out of kfm.yaml and kfm.lock. Programs
// other tools loaded into a dispatcher chain can be removed by their name
// too. Removing the last program detaches the chain and cleans up every
// pin.
func (m *Manager) Remove(ctx context.Context, iface string, hook bpf.Hook, name string) (*HookStatus, error) {
	return m.RemoveIn(ctx, "", iface, hook, name)
}

// RemoveIn is Remove for an interface in the network namespace netns ("",
// a NAME or a PATH, as for InstallRequest.Netns).
func (m *Manager) RemoveIn(ctx context.Context, netns, iface string, hook bpf.Hook, name string) (*HookStatus, error) {
	netnsPath, err := NetnsPath(netns)
	if err != nil {
		return nil, err
	}
	lock, err := m.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	man, lk, err := m.loadProject()
	if err != nil {
		return nil, err
	}
	st, err := m.state.load()
	if err != nil {
		return nil, err
	}
	m.pruneFirst(st)
	hooks := bpf.Hooks
	if hook != "" {
		hooks = []bpf.Hook{hook}
	}
	type found struct {
		hook bpf.Hook
		// notListed: running, but not in kfm.yaml; foreign: and loaded
		// by another tool.
		notListed, foreign bool
	}
	var where []found
	for _, h := range hooks {
		if c := man.ChainIn(netnsPath, iface, h); c != nil && slices.ContainsFunc(c.Programs, func(p ProgramSpec) bool { return p.Name == name }) {
			where = append(where, found{hook: h})
			continue
		}
		status, err := m.hookStatus(ctx, st, netnsPath, iface, h)
		if err != nil {
			return nil, err
		}
		// Not in kfm.yaml but running: another tool's program, or one of
		// kfm's that an interrupted change left (for example a first
		// install killed before it wrote kfm.yaml; status reports it as
		// drift). Either is removed from the kernel, and the files, which
		// do not name it, stay as they are.
		if status == nil {
			continue
		}
		if i := slices.IndexFunc(status.Programs, func(p ProgramStatus) bool { return p.Name == name }); i >= 0 {
			where = append(where, found{hook: h, notListed: true, foreign: status.Programs[i].Origin != OriginKFM})
		}
	}
	switch len(where) {
	case 0:
		return nil, fmt.Errorf("%s: no program named %q: %w (see kfm status)", iface, name, ErrNotInstalled)
	case 1:
	default:
		return nil, fmt.Errorf("%s: %q runs on more than one hook: say which with --hook", iface, name)
	}
	h := where[0].hook
	cs := ChainSpec{Interface: iface, Netns: netns, Hook: h}
	if c := man.ChainIn(netnsPath, iface, h); c != nil {
		cs = *c
		cs.Programs = slices.DeleteFunc(slices.Clone(c.Programs), func(p ProgramSpec) bool { return p.Name == name })
	}
	elements, lc, err := m.chainElements(ctx, &cs, lk, nil, nil, keepLocked)
	if err != nil {
		return nil, err
	}
	spec := HookSpec{Netns: netnsPath, Interface: iface, Hook: h, Mode: cs.Mode, Elements: elements}
	if where[0].foreign {
		spec.DropForeign = []string{name}
	}
	if err := m.apply(ctx, st, []HookSpec{spec}); err != nil {
		return nil, err
	}
	if !where[0].notListed {
		man.putChain(cs)
		lk.putLocked(lc)
		if err := m.saveProject(man, lk); err != nil {
			return nil, fmt.Errorf("the program is removed, but: %w", err)
		}
	}
	return m.hookStatus(ctx, st, netnsPath, iface, h)
}
