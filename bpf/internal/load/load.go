// Package load loads one component of a chain: its entry function only, with
// its instructions rewritten for the backend, its state maps replaced by the
// caller's, and errors that name the component and quote the verifier.
package load

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/bpf/rewrite"
)

// Options describe how to load a component.
type Options struct {
	// Rewrite changes the entry function's instructions (nil: unchanged).
	// When the component has a counter map, Rewrite gets the instructions
	// with rewrite.Count already applied.
	Rewrite func(asm.Instructions) (asm.Instructions, error)
	// ExtraMaps are maps the rewritten instructions reference by name
	// (MapSpecs added to the collection) with the kernel maps to use.
	ExtraMaps map[string]*ebpf.Map
	// Cache shares decoded kernel BTF between the loads of one change.
	Cache *btf.Cache
}

// VerifierLogLines is how many lines of the verifier log an error quotes.
const VerifierLogLines = 12

// ProgramSpec checks that c can run on hook h and returns its entry
// function's spec, converted for h: TC programs load as sched_cls (the type
// cls_bpf, tcx and tail calls from a sched_cls root need), XDP programs lose
// the multi-buffer flag (kfm's chains run without it).
func ProgramSpec(c bpf.Component, h bpf.Hook) (*ebpf.ProgramSpec, error) {
	if c.Spec == nil {
		return nil, fmt.Errorf("%s: program id %d was loaded by another tool; this backend can only chain programs kfm loads", c.Name, c.Running)
	}
	ps := c.Spec.Programs[c.Function]
	if ps == nil {
		var names []string
		for n := range c.Spec.Programs {
			names = append(names, n)
		}
		return nil, fmt.Errorf("%s: no function %q in the object (it has %s): %w", c.Name, c.Function, strings.Join(names, ", "), bpf.ErrNoProgram)
	}
	ps = ps.Copy()
	switch {
	case h == bpf.HookXDP && ps.Type == ebpf.XDP:
		ps.Flags &^= unix.BPF_F_XDP_HAS_FRAGS
	case h.IsTC() && (ps.Type == ebpf.SchedCLS || ps.Type == ebpf.SchedACT):
		ps.Type = ebpf.SchedCLS
		ps.AttachType = ebpf.AttachNone
	default:
		return nil, fmt.Errorf("%s: %s is a %s program and cannot run on the %s hook", c.Name, c.Function, ps.Type, h)
	}
	return ps, nil
}

// Component loads c for hook h.
func Component(c bpf.Component, h bpf.Hook, opts Options) (*ebpf.Program, error) {
	ps, err := ProgramSpec(c, h)
	if err != nil {
		return nil, err
	}
	if c.Counters != nil {
		insns, err := rewrite.Count(ps.Instructions, counters.MapName)
		if err != nil {
			return nil, fmt.Errorf("%s: count the verdicts of %s: %w (load it without verdict counters: kfm install --counters=false, or counters: false in kfm.yaml)", c.Name, c.Function, err)
		}
		ps.Instructions = insns
		extra := make(map[string]*ebpf.Map, len(opts.ExtraMaps)+1)
		maps.Copy(extra, opts.ExtraMaps)
		extra[counters.MapName] = c.Counters
		opts.ExtraMaps = extra
	}
	if opts.Rewrite != nil {
		insns, err := opts.Rewrite(ps.Instructions)
		if err != nil {
			return nil, fmt.Errorf("%s: rewrite %s: %w", c.Name, c.Function, err)
		}
		ps.Instructions = insns
	}
	spec := c.Spec.Copy()
	spec.Programs = map[string]*ebpf.ProgramSpec{c.Function: ps}
	repl := make(map[string]*ebpf.Map, len(c.Maps)+len(opts.ExtraMaps))
	for name, m := range c.Maps {
		if _, ok := spec.Maps[name]; ok {
			repl[name] = m
		}
	}
	for name, m := range opts.ExtraMaps {
		if _, clash := spec.Maps[name]; clash {
			return nil, fmt.Errorf("%s: the object already has a map called %s, which kfm needs for chaining", c.Name, name)
		}
		info, err := m.Info()
		if err != nil {
			return nil, err
		}
		spec.Maps[name] = &ebpf.MapSpec{
			Name: name, Type: m.Type(), KeySize: m.KeySize(), ValueSize: m.ValueSize(),
			MaxEntries: m.MaxEntries(), Flags: info.Flags,
		}
		repl[name] = m
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: repl,
		Cache:           opts.Cache,
	})
	if err != nil {
		return nil, Error(c.Name, err)
	}
	defer coll.Close()
	prog := coll.DetachProgram(c.Function)
	if prog == nil {
		return nil, fmt.Errorf("%s: %s missing after load", c.Name, c.Function)
	}
	return prog, nil
}

// Error wraps a load failure of component name in bpf.ErrLoad, with the
// last lines of the verifier log.
func Error(name string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log := ve.Log
		if len(log) > VerifierLogLines {
			log = log[len(log)-VerifierLogLines:]
		}
		return fmt.Errorf("%s: %w: the verifier rejected it (%v)\nverifier log (last lines):\n  %s", name, bpf.ErrLoad, unwrapErrno(ve.Cause), strings.Join(log, "\n  "))
	}
	return fmt.Errorf("%s: %w: %w", name, bpf.ErrLoad, unwrapErrno(err))
}

// Errno returns the errno inside err, without the text cilium/ebpf wraps
// around it (err itself when it holds none): for messages that say why the
// kernel refused something.
func Errno(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// unwrapErrno drops cilium/ebpf's "MEMLOCK may be too low" hint on EPERM,
// which is misleading in sandboxes that refuse program types.
func unwrapErrno(err error) error {
	var errno unix.Errno
	if errors.Is(err, unix.EPERM) && errors.As(err, &errno) {
		return errno
	}
	return err
}

// AddCounters rewrites ps (the entry function of spec) to count its
// verdicts into c.Counters and adds the counter map to spec and repl, for
// backends that load without Component (the dispatcher). Nothing happens
// when c has no counter map.
func AddCounters(c bpf.Component, spec *ebpf.CollectionSpec, ps *ebpf.ProgramSpec, repl map[string]*ebpf.Map) error {
	if c.Counters == nil {
		return nil
	}
	if _, clash := spec.Maps[counters.MapName]; clash {
		return fmt.Errorf("%s: the object already has a map called %s, which kfm needs for its verdict counters", c.Name, counters.MapName)
	}
	insns, err := rewrite.Count(ps.Instructions, counters.MapName)
	if err != nil {
		return fmt.Errorf("%s: count the verdicts of %s: %w (load it without verdict counters: kfm install --counters=false, or counters: false in kfm.yaml)", c.Name, c.Function, err)
	}
	ps.Instructions = insns
	spec.Maps[counters.MapName] = counters.MapSpec()
	repl[counters.MapName] = c.Counters
	return nil
}
