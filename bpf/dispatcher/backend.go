package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/probe"
	"github.com/kfm-project/kfm/bpf/xdp"
)

// Name is the backend's name as users write it.
const Name = "dispatcher"

// Backend chains XDP programs through a libxdp-protocol dispatcher. It
// implements the chain package's Backend interface. It keeps no state
// between calls: everything it needs is read from the kernel and the pins,
// so it works on chains that xdp-loader (libxdp) built and vice versa.
type Backend struct {
	prober *probe.Prober
}

// New returns the dispatcher backend. Feature probes are cached in p (nil:
// a cache of its own).
func New(p *probe.Prober) *Backend {
	if p == nil {
		p = new(probe.Prober)
	}
	return &Backend{prober: p}
}

// Name is "dispatcher".
func (b *Backend) Name() string { return Name }

// Supports reports whether the kernel can run dispatcher chains on h: h must
// be the XDP hook, and the kernel must load BPF_PROG_TYPE_EXT programs and
// attach one program to several dispatchers (Linux 5.10).
func (b *Backend) Supports(h bpf.Hook) error {
	if h != bpf.HookXDP {
		return fmt.Errorf("the dispatcher backend chains XDP programs only, not %s (use tcx or tc)", h)
	}
	if err := b.prober.EXT(); err != nil {
		return &unsupportedError{err}
	}
	return nil
}

// unsupportedError says why the kernel cannot run dispatchers; it wraps
// the probe's error (with the kernel's errno) and bpf.ErrUnsupportedKernel.
type unsupportedError struct{ probe error }

func (e *unsupportedError) Error() string {
	return e.probe.Error()
}

func (e *unsupportedError) Unwrap() []error { return []error{e.probe, bpf.ErrUnsupportedKernel} }

func checkTarget(t bpf.Target) error {
	if t.Hook != bpf.HookXDP {
		return fmt.Errorf("%s: the dispatcher backend chains XDP programs only", t)
	}
	if t.Ifindex <= 0 {
		return fmt.Errorf("%s: no interface index", t)
	}
	return nil
}

// Current reads the dispatcher chain on t: the programs in run order with
// the priority and proceed-on actions the dispatcher's configuration holds
// for them. Names are the kernel's program names, completed from BTF when
// the kernel truncated them. Dispatchers of versions 1 to 3 are read. It
// returns nil, nil when t runs no XDP program, and an error wrapping
// bpf.ErrForeignProgram when it runs a program that is not a dispatcher kfm
// can read (the error names it and says how to remove it).
func (b *Backend) Current(ctx context.Context, t bpf.Target) (*bpf.Chain, error) {
	if err := checkTarget(t); err != nil {
		return nil, err
	}
	r, err := readRunning(ctx, t, false)
	if err != nil || r == nil {
		return nil, err
	}
	defer r.Close()
	if !r.isDispatcher() {
		return nil, r.foreignError(t)
	}
	return r.chain(t), nil
}

// Prepare builds the dispatcher for desired (in run order) without touching
// the interface: it loads a new dispatcher whose configuration holds each
// component's priority and proceed-on actions, loads the new components as
// BPF_PROG_TYPE_EXT programs replacing their slots (prog0..prog9, or the
// dispatcher's main function when the chain has one program, as libxdp
// does), and attaches the components that already run (Component.Running,
// including programs other tools loaded) to their new slots with freplace
// links, so they keep their maps and state. Commit pins and attaches it.
//
// A component's ProceedOn nil means the default, XDP_PASS (as in the other
// backends); an empty non-nil list means that no verdict goes on (Current
// reads a chain-call bitmap without verdicts that way, so that programs
// another tool configured so keep their behaviour).
//
// The dispatcher is loaded with BPF_F_XDP_HAS_FRAGS when every component
// handles multi-buffer packets and the kernel knows the flag.
//
// It refuses (before loading anything) to replace a program that is not a
// dispatcher, unless opts.Replace names it as another backend's root, and a
// dispatcher of another version than kfm builds (libxdp refuses both too).
// An empty desired chain prepares the removal of the dispatcher and its
// pins. Load failures wrap bpf.ErrLoad, name the component and end with the
// tail of the verifier log.
func (b *Backend) Prepare(ctx context.Context, t bpf.Target, desired []bpf.Component, opts bpf.PrepareOptions) (bpf.Change, error) {
	if err := checkTarget(t); err != nil {
		return nil, err
	}
	if err := checkDesired(desired); err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	var want xdp.Mode
	if opts.XDPMode != "" {
		m, err := xdp.ParseMode(opts.XDPMode)
		if err != nil {
			return nil, err
		}
		if m == xdp.ModeOffload {
			return nil, fmt.Errorf("%s: %w", t, xdp.ErrOffload)
		}
		want = m
	}

	old, err := readRunning(ctx, t, true)
	if err != nil {
		return nil, err
	}
	c := &change{t: t, old: old, mode: want}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	if old != nil {
		switch {
		case old.cfg != nil && old.cfg.Version != Version:
			return nil, fmt.Errorf("%s runs a version %d XDP dispatcher (kfm builds version %d); libxdp does not change dispatchers of another version either, so as not to lock out the tool that loaded it: remove its programs with that tool first (xdp-loader unload %s --all): %w: %w",
				t.Interface, old.cfg.Version, Version, t.Interface, ErrUnsupportedVersion, bpf.ErrForeignProgram)
		case old.isDispatcher():
		case opts.Replace != nil && opts.Replace.RootID == old.id:
		default:
			return nil, old.foreignError(t)
		}
		if want != "" && want != old.mode {
			return nil, fmt.Errorf("%s runs XDP in %s mode and kfm was asked for %s mode; an interface runs one mode at a time: remove its programs first or use --mode %s", t.Interface, old.mode, want, old.mode)
		}
		c.mode = old.mode
	}
	if c.mode == "" {
		c.mode = xdp.ModeNative
	}
	if len(desired) == 0 {
		ok = true
		return c, nil
	}
	if err := c.build(desired); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// checkDesired checks what the chain layer promises: at most MaxPrograms
// named components in run order, each with something to run, no running
// program twice.
func checkDesired(desired []bpf.Component) error {
	if len(desired) > MaxPrograms {
		return fmt.Errorf("%d programs: a dispatcher runs at most %d", len(desired), MaxPrograms)
	}
	running := map[ebpf.ProgramID]string{}
	for i, c := range desired {
		// Names need not be unique here: a chain may run the same program
		// twice (xdp-loader loading one object twice), and the dispatcher
		// protocol knows programs by slot, not by name.
		if c.Name == "" {
			return fmt.Errorf("program %d has no name", i)
		}
		if c.Priority < 0 || c.Priority > math.MaxUint32 {
			return fmt.Errorf("%s: priority %d out of range (0 to %d)", c.Name, c.Priority, uint32(math.MaxUint32))
		}
		if i > 0 && c.Priority < desired[i-1].Priority {
			return fmt.Errorf("programs not in run order: %s (priority %d) after %s (priority %d)", c.Name, c.Priority, desired[i-1].Name, desired[i-1].Priority)
		}
		if c.Spec == nil && c.Running == 0 {
			return fmt.Errorf("%s: nothing to load (no spec) and not running", c.Name)
		}
		if c.Running != 0 {
			if other, dup := running[c.Running]; dup {
				return fmt.Errorf("%s and %s are the same running program %d", other, c.Name, c.Running)
			}
			running[c.Running] = c.Name
		}
	}
	return nil
}

// Release removes the dispatcher pin directories of t's interface whose
// dispatcher is no longer attached there, after another backend took the
// hook over (what `xdp-loader clean` does). Like libxdp it goes by
// interface index, so it must run in the network namespace of t.
func (b *Backend) Release(ctx context.Context, t bpf.Target) error {
	if err := checkTarget(t); err != nil {
		return err
	}
	dir := xdpDir(t.BPFFS)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	unlock, err := lock(ctx, t.BPFFS)
	if err != nil {
		return err
	}
	defer unlock()
	att, err := xdp.Query(t.Ifindex)
	if err != nil {
		return fmt.Errorf("%s: %w", t.Interface, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		ifindex, id, ok := parsePinDir(e.Name())
		if !ok || !e.IsDir() || ifindex != t.Ifindex || id == att.ProgramID {
			continue
		}
		if err := removePinDir(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loadError describes a component that failed to load or attach: it wraps
// bpf.ErrLoad, names the component and ends with the tail of the verifier
// log when there is one.
func loadError(c bpf.Component, what string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		tail := ve.Log
		const keep = 12
		if len(tail) > keep {
			tail = tail[len(tail)-keep:]
		}
		return fmt.Errorf("%s (%s): %s: %w: the verifier rejected it (%w)\nverifier log (last %d lines):\n\t%s",
			c.Name, c.Function, what, bpf.ErrLoad, ve.Cause, len(tail), strings.Join(tail, "\n\t"))
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		// cilium/ebpf adds a misleading "MEMLOCK may be too low" hint to
		// EPERM; the errno says it all.
		return fmt.Errorf("%s (%s): %s: %w: %w", c.Name, c.Function, what, bpf.ErrLoad, errno)
	}
	return fmt.Errorf("%s (%s): %s: %w: %w", c.Name, c.Function, what, bpf.ErrLoad, err)
}

// attachFreplace attaches prog to function slot of dispatcher disp.
func attachFreplace(disp *ebpf.Program, slot string, prog *ebpf.Program) (link.Link, error) {
	return link.AttachFreplace(disp, slot, prog)
}
