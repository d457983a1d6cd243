package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/load"
	"github.com/kfm-project/kfm/bpf/xdp"
)

// change is a prepared dispatcher change (bpf.Change).
type change struct {
	t    bpf.Target
	mode xdp.Mode
	// old is what ran when the change was prepared (nil: nothing), with
	// its slot programs and links open, so that Revert can restore it.
	old *running

	// The new dispatcher (nil when the change removes the chain), its
	// configuration and its slots.
	disp   *ebpf.Program
	dispID ebpf.ProgramID
	cfg    Config
	slots  []*slot

	committed, reverted, closed bool
}

// slot is one component in the new dispatcher.
type slot struct {
	comp bpf.Component
	// keep is the old dispatcher's slot that runs this program already,
	// -1 for a program this change loads.
	keep  int
	frags bool
	prog  *ebpf.Program
	info  *ebpf.ProgramInfo
	link  link.Link
}

// slotFunction is the dispatcher function the component of slot i replaces
// in a chain of n: prog<i>, or with a single program the dispatcher's main
// function itself (libxdp 1.3.1 does this, xdp_multiprog__link_prog).
func slotFunction(i, n int) string {
	if n == 1 {
		return ProgramName
	}
	return fmt.Sprintf("prog%d", i)
}

// build loads the new dispatcher and attaches every component to it.
func (c *change) build(desired []bpf.Component) error {
	oldSlot := map[ebpf.ProgramID]int{}
	if c.old != nil && c.old.isDispatcher() {
		for i, info := range c.old.infos {
			if id, ok := info.ID(); ok {
				oldSlot[id] = i
			}
		}
	}
	cfg := Config{Version: Version, NumProgs: len(desired)}
	allFrags := true
	for i, comp := range desired {
		s := &slot{comp: comp, keep: -1}
		if j, ok := oldSlot[comp.Running]; ok && comp.Running != 0 {
			s.keep = j
			s.frags = c.old.cfg.ProgramFlags[j]&FlagXDPHasFrags != 0
		} else {
			if comp.Spec == nil {
				return fmt.Errorf("%s: program %d (%s) no longer runs on %s: %w", c.t, comp.Running, comp.Name, c.t.Interface, bpf.ErrConflict)
			}
			ps, err := componentSpec(comp)
			if err != nil {
				return fmt.Errorf("%s: %w", c.t, err)
			}
			s.frags = ps.Flags&unix.BPF_F_XDP_HAS_FRAGS != 0
		}
		allFrags = allFrags && s.frags
		if s.comp.ProceedOn == nil {
			// nil is the default, as in the other backends; an empty
			// non-nil list (what Current reads from a chain-call bitmap
			// without a verdict) means never go on.
			s.comp.ProceedOn = bpf.DefaultProceedOn(bpf.HookXDP)
		}
		cfg.ChainCallActions[i] = s.comp.ProceedOn.XDPMask() | 1<<RetVal
		cfg.RunPrios[i] = uint32(comp.Priority)
		if s.frags {
			cfg.ProgramFlags[i] = FlagXDPHasFrags
		}
		c.slots = append(c.slots, s)
	}

	disp, err := loadDispatcherFor(&cfg, allFrags)
	if err != nil {
		return fmt.Errorf("%s: %w", c.t, err)
	}
	c.disp, c.cfg = disp, cfg
	if info, err := disp.Info(); err == nil {
		c.dispID, _ = info.ID()
	}

	for i, s := range c.slots {
		fn := slotFunction(i, len(c.slots))
		if s.keep >= 0 {
			s.prog, err = c.old.progs[s.keep].Clone()
			if err != nil {
				return fmt.Errorf("%s: %w", c.t, err)
			}
			s.link, err = attachFreplace(disp, fn, s.prog)
			if err != nil {
				return loadError(s.comp, fmt.Sprintf("re-attach running program %d to %s of the new dispatcher", s.comp.Running, fn), err)
			}
		} else {
			if err := s.load(disp, fn); err != nil {
				return err
			}
		}
		if s.info, err = s.prog.Info(); err != nil {
			return fmt.Errorf("%s: %s: program info: %w", c.t, s.comp.Name, err)
		}
	}
	return nil
}

// loadDispatcherFor loads kfm's dispatcher with cfg, with
// BPF_F_XDP_HAS_FRAGS when frags is set and the kernel knows it (5.18); it
// records in cfg whether it did.
func loadDispatcherFor(cfg *Config, frags bool) (*ebpf.Program, error) {
	if frags {
		spec, err := Spec()
		if err != nil {
			return nil, err
		}
		cfg.Frags = true
		if p, err := LoadDispatcher(spec, *cfg, true); err == nil {
			return p, nil
		}
		// The kernel refuses the flag (before Linux 5.18): like libxdp,
		// load without it.
	}
	spec, err := Spec()
	if err != nil {
		return nil, err
	}
	cfg.Frags = false
	return LoadDispatcher(spec, *cfg, false)
}

// componentSpec returns the entry program of a component to load.
func componentSpec(comp bpf.Component) (*ebpf.ProgramSpec, error) {
	ps, ok := comp.Spec.Programs[comp.Function]
	if !ok {
		var names []string
		for n := range comp.Spec.Programs {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("%s: object has no program %q (it has %s)", comp.Name, comp.Function, strings.Join(names, ", "))
	}
	if ps.Type != ebpf.XDP {
		return nil, fmt.Errorf("%s: %s is a %s program; the dispatcher chains XDP programs", comp.Name, comp.Function, ps.Type)
	}
	if comp.Spec.Types == nil {
		return nil, fmt.Errorf("%s: the object has no BTF, which freplace needs: compile it with -g", comp.Name)
	}
	return ps, nil
}

// load loads the slot's component as an extension replacing function fn of
// disp and attaches it.
func (s *slot) load(disp *ebpf.Program, fn string) error {
	comp := s.comp
	// A copy: the counter rewrite must not pile up when a slot is loaded
	// again.
	spec := comp.Spec.Copy()
	ps := spec.Programs[comp.Function]
	ps.Type = ebpf.Extension
	ps.AttachType = ebpf.AttachNone
	ps.AttachTarget = disp
	ps.AttachTo = fn
	// The dispatcher carries the frags flag for all its components.
	ps.Flags &^= unix.BPF_F_XDP_HAS_FRAGS
	// Map pinning is the caller's business (Component.Maps); like
	// xdp-loader without --pin-path, maps it does not hand over are not
	// pinned.
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinNone && comp.Maps[name] == nil {
			ms.Pinning = ebpf.PinNone
		}
	}
	repl := maps.Clone(comp.Maps)
	if repl == nil {
		repl = map[string]*ebpf.Map{}
	}
	if err := load.AddCounters(comp, spec, ps, repl); err != nil {
		return err
	}
	prog, err := loadProgram(spec, comp.Function, &ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return loadError(comp, "load as an extension of the dispatcher", err)
	}
	s.prog = prog
	s.link, err = attachFreplace(disp, fn, prog)
	if err != nil {
		return loadError(comp, "attach to "+fn+" of the new dispatcher", err)
	}
	return nil
}

// Programs describes the chain as it runs after Commit.
func (c *change) Programs() []bpf.ChainProgram {
	out := []bpf.ChainProgram{}
	for _, s := range c.slots {
		p := bpf.ChainProgram{
			Name:      s.comp.Name,
			Priority:  s.comp.Priority,
			ProceedOn: s.comp.ProceedOn,
		}
		if s.info != nil {
			p.Name = s.info.Name
			p.ID, _ = s.info.ID()
			p.Tag = s.info.Tag
		}
		out = append(out, p)
	}
	return out
}

// DispatcherID is the ID of the dispatcher the change attaches (zero when
// it removes the chain).
func (c *change) DispatcherID() ebpf.ProgramID { return c.dispID }

// oldRoot is the program attached when the change was prepared.
func (c *change) oldRoot() *ebpf.Program {
	if c.old == nil {
		return nil
	}
	return c.old.root
}

// Commit pins the new dispatcher's slots where libxdp expects them and
// swaps the interface's XDP program for it atomically (XDP_FLAGS_REPLACE
// with the expected old program; XDP_FLAGS_UPDATE_IF_NOEXIST when nothing
// ran), then unpins the old dispatcher. The old dispatcher and its links
// stay open until Close, for Revert. If the interface's program changed
// since Prepare, nothing changes and the error wraps bpf.ErrConflict: read
// the chain again and prepare again.
func (c *change) Commit(ctx context.Context) error {
	if c.closed || c.committed {
		return errors.New("dispatcher change already committed or closed")
	}
	if c.disp == nil && c.old == nil {
		c.committed = true
		return nil // nothing ran, nothing will
	}
	unlock, err := lock(ctx, c.t.BPFFS)
	if err != nil {
		return err
	}
	defer unlock()

	var newDir string
	if c.disp != nil {
		newDir = PinDir(c.t.BPFFS, c.t.Ifindex, c.dispID)
		if err := pinSlots(newDir, c.slots); err != nil {
			return fmt.Errorf("%s: %w", c.t, err)
		}
	}
	if err := xdp.Replace(c.t.Ifindex, c.disp, c.oldRoot(), c.mode); err != nil {
		if newDir != "" {
			_ = removePinDir(newDir)
		}
		return c.attachError(err)
	}
	c.committed = true
	if c.old != nil && c.old.isDispatcher() {
		// Like libxdp, a failure to unpin the old dispatcher does not fail
		// the change: the new chain runs, and a stale directory is
		// harmless (Release and `xdp-loader clean` remove it).
		_ = removePinDir(c.old.dir)
	}
	return nil
}

func (c *change) attachError(err error) error {
	if errors.Is(err, xdp.ErrChanged) || errors.Is(err, xdp.ErrOccupied) {
		return fmt.Errorf("%s: the XDP program changed since the chain was read (another kfm or libxdp tool?): %w: %w", c.t, bpf.ErrConflict, err)
	}
	return fmt.Errorf("%s: %w", c.t, err)
}

// pinSlots pins every slot's program and link in dir, libxdp's layout. On
// failure it removes what it pinned.
func pinSlots(dir string, slots []*slot) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for i, s := range slots {
		lfd, err := linkFD(s.link)
		if err == nil {
			err = objPin(lfd, linkPin(dir, i))
		}
		if err == nil {
			err = objPin(s.prog.FD(), progPin(dir, i))
		}
		if err != nil {
			_ = removePinDir(dir)
			return fmt.Errorf("pin %s: %w", s.comp.Name, err)
		}
	}
	return nil
}

// pinRunning pins the slots of a dispatcher read from its pins again (for
// Revert).
func pinRunning(r *running) error {
	if err := os.Mkdir(r.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", r.dir, err)
	}
	for i := range r.progs {
		lfd, err := linkFD(r.links[i])
		if err == nil {
			err = objPin(lfd, linkPin(r.dir, i))
		}
		if err == nil {
			err = objPin(r.progs[i].FD(), progPin(r.dir, i))
		}
		if err != nil {
			_ = removePinDir(r.dir)
			return err
		}
	}
	return nil
}

func linkFD(l link.Link) (int, error) {
	f, ok := l.(interface{ FD() int })
	if !ok {
		return -1, fmt.Errorf("link %T has no file descriptor", l)
	}
	return f.FD(), nil
}

// Revert restores the chain that ran before Commit: it pins the old
// dispatcher's slots again and swaps it back (or detaches the new
// dispatcher when nothing ran before), then unpins the new one.
func (c *change) Revert(ctx context.Context) error {
	if !c.committed || c.closed {
		return errors.New("dispatcher change not committed or already closed")
	}
	if c.reverted {
		return nil
	}
	if c.disp == nil && c.old == nil {
		c.reverted = true
		return nil
	}
	unlock, err := lock(ctx, c.t.BPFFS)
	if err != nil {
		return err
	}
	defer unlock()
	if c.old != nil && c.old.isDispatcher() {
		if err := pinRunning(c.old); err != nil {
			return fmt.Errorf("%s: pin the old dispatcher again: %w", c.t, err)
		}
	}
	if err := xdp.Replace(c.t.Ifindex, c.oldRoot(), c.disp, c.mode); err != nil {
		if c.old != nil && c.old.isDispatcher() {
			_ = removePinDir(c.old.dir)
		}
		return c.attachError(err)
	}
	c.reverted = true
	if c.disp != nil {
		_ = removePinDir(PinDir(c.t.BPFFS, c.t.Ifindex, c.dispID)) // as in Commit
	}
	return nil
}

// Close releases what the change holds. What runs on the interface stays
// alive through its pins.
func (c *change) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, s := range c.slots {
		if s.link != nil {
			errs = append(errs, s.link.Close())
		}
		if s.prog != nil {
			errs = append(errs, s.prog.Close())
		}
	}
	if c.disp != nil {
		errs = append(errs, c.disp.Close())
	}
	c.old.Close()
	return errors.Join(errs...)
}
