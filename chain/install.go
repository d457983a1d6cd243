package chain

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/kfm-project/kfm/bpf"
)

// InstallRequest adds a program to a hook, or replaces the program of the
// same name.
type InstallRequest struct {
	Interface string
	// Hook defaults to the program type's hook (xdp, or tc-ingress for
	// TC programs).
	Hook bpf.Hook
	// Backend: "", "auto" or a backend name (see HookSpec.Backend).
	Backend string
	// Mode is the XDP attach mode: "" (keep, else native), native, skb.
	Mode string

	// Source names where the object came from (path or reference), Digest
	// the bundle digest for registry installs, Data the ELF bytes.
	Source string
	Digest string
	Data   []byte
	// Function selects the entry function (default: the only one).
	Function string
	// Name defaults to the function name.
	Name string
	// Priority and ProceedOn default to the object's libxdp
	// XDP_RUN_CONFIG metadata, else 50 and the hook's pass verdict.
	Priority *int
	// ProceedOn names verdicts of the hook ("pass,drop"), parsed once the
	// hook is known.
	ProceedOn string
	// Params are values for the object's volatile const globals.
	Params    map[string]string
	ResetMaps bool
}

// Element builds the element an install request describes: it parses the
// object, picks the function and hook, and fills in defaults.
func (r InstallRequest) Element() (*Element, bpf.Hook, error) {
	obj, err := bpf.ParseObject(r.Source, r.Data)
	if err != nil {
		return nil, "", err
	}
	prog, err := obj.Program(r.Function)
	if err != nil {
		return nil, "", err
	}
	if len(prog.Hooks) == 0 {
		return nil, "", fmt.Errorf("%s: %s is a %s program; kfm chains xdp and sched_cls (tc) programs", r.Source, prog.Function, prog.Type)
	}
	hook := r.Hook
	if hook == "" {
		hook = prog.Hooks[0]
	}
	if !slices.Contains(prog.Hooks, hook) {
		return nil, "", fmt.Errorf("%s: %s is a %s program and cannot run on the %s hook", r.Source, prog.Function, prog.Type, hook)
	}
	name := r.Name
	if name == "" {
		name = prog.Function
	}
	if err := ValidateName(name); err != nil {
		return nil, "", err
	}
	params, err := canonicalParams(obj, r.Params)
	if err != nil {
		return nil, "", err
	}
	e := &Element{
		Name: name, Source: r.Source, Digest: r.Digest, Object: obj, Data: r.Data,
		Function: prog.Function, Params: params,
		Priority: bpf.DefaultPriority, ProceedOn: bpf.DefaultProceedOn(hook),
	}
	if hook == bpf.HookXDP {
		rc, _ := obj.RunConfigFor(prog.Function)
		e.Priority, e.ProceedOn = rc.Priority, rc.ProceedOn
	}
	if r.Priority != nil {
		e.Priority = *r.Priority
	}
	if r.ProceedOn != "" {
		if e.ProceedOn, err = bpf.ParseActions(hook, r.ProceedOn); err != nil {
			return nil, "", err
		}
	}
	return e, hook, nil
}

// Install adds the program to its hook, or replaces the program of the same
// name, in one atomic change of the hook. Everything else on the hook
// keeps running (programs kept are not reloaded where the backend allows).
func (m *Manager) Install(ctx context.Context, r InstallRequest) (*HookStatus, error) {
	e, hook, err := r.Element()
	if err != nil {
		return nil, err
	}
	lock, err := m.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	st, err := m.state.load()
	if err != nil {
		return nil, err
	}
	elements, err := m.hookElements(st.find(r.Interface, hook), hook)
	if err != nil {
		return nil, err
	}
	elements = slices.DeleteFunc(elements, func(o *Element) bool { return o.Name == e.Name })
	elements = append(elements, e)
	spec := HookSpec{Interface: r.Interface, Hook: hook, Backend: r.Backend, Mode: r.Mode, Elements: elements, ResetMaps: r.ResetMaps}
	if err := m.apply(ctx, st, []HookSpec{spec}); err != nil {
		return nil, err
	}
	return m.hookStatus(ctx, st, r.Interface, hook)
}

// Remove takes the program called name off the hook (hook "" finds it on
// any hook of the interface). Programs other tools loaded into a
// dispatcher chain can be removed by their name too. Removing the last
// program detaches the chain and cleans up every pin.
func (m *Manager) Remove(ctx context.Context, iface string, hook bpf.Hook, name string) (*HookStatus, error) {
	lock, err := m.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	st, err := m.state.load()
	if err != nil {
		return nil, err
	}
	hooks := bpf.Hooks
	if hook != "" {
		hooks = []bpf.Hook{hook}
	}
	var found []bpf.Hook
	foreign := map[bpf.Hook]bool{}
	for _, h := range hooks {
		if hs := st.find(iface, h); hs != nil && hs.element(name) != nil {
			found = append(found, h)
			continue
		}
		status, err := m.hookStatus(ctx, st, iface, h)
		if err != nil && !errors.Is(err, ErrNoInterface) && !errors.Is(err, bpf.ErrForeignProgram) {
			return nil, err
		}
		if errors.Is(err, ErrNoInterface) {
			return nil, err
		}
		if status != nil && slices.ContainsFunc(status.Programs, func(p ProgramStatus) bool { return p.Name == name }) {
			found = append(found, h)
			foreign[h] = true
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%s: no program named %q: %w (see kfm status)", iface, name, ErrNotInstalled)
	case 1:
	default:
		return nil, fmt.Errorf("%s: %q runs on %v: say which with --hook", iface, name, found)
	}
	h := found[0]
	elements, err := m.hookElements(st.find(iface, h), h)
	if err != nil {
		return nil, err
	}
	spec := HookSpec{Interface: iface, Hook: h, Elements: slices.DeleteFunc(elements, func(o *Element) bool { return o.Name == name })}
	if foreign[h] {
		spec.DropForeign = []string{name}
	}
	if err := m.apply(ctx, st, []HookSpec{spec}); err != nil {
		return nil, err
	}
	return m.hookStatus(ctx, st, iface, h)
}
