// Package clsact attaches BPF programs as direct-action cls_bpf filters under
// an interface's clsact qdisc, through netlink (never the tc binary). It acts
// in the network namespace of the calling OS thread.
package clsact

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
)

// Filter is one cls_bpf filter on a clsact hook.
type Filter struct {
	Priority  uint16
	Handle    uint32
	ProgramID ebpf.ProgramID
	// Name is the filter's name (TCA_BPF_NAME), shown by `tc filter show`.
	Name         string
	DirectAction bool
}

// Parent is the clsact parent handle of a TC hook.
func Parent(h bpf.Hook) (uint32, error) {
	switch h {
	case bpf.HookTCIngress:
		return netlink.HANDLE_MIN_INGRESS, nil
	case bpf.HookTCEgress:
		return netlink.HANDLE_MIN_EGRESS, nil
	}
	return 0, fmt.Errorf("hook %s is not a TC hook", h)
}

func link(ifindex int) (netlink.Link, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	return l, nil
}

// Ensure adds a clsact qdisc to the interface unless it has one.
func Ensure(ifindex int) error {
	l, err := link(ifindex)
	if err != nil {
		return err
	}
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
	err = netlink.QdiscAdd(q)
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	return fmt.Errorf("add clsact qdisc to %s: %w", l.Attrs().Name, err)
}

// List returns the cls_bpf filters of hook h, by priority. An interface
// without a clsact qdisc has none.
func List(ifindex int, h bpf.Hook) ([]Filter, error) {
	parent, err := Parent(h)
	if err != nil {
		return nil, err
	}
	l, err := link(ifindex)
	if err != nil {
		return nil, err
	}
	fs, err := netlink.FilterList(l, parent)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil, nil // no clsact qdisc
	}
	if err != nil {
		return nil, fmt.Errorf("list %s filters of %s: %w", h, l.Attrs().Name, err)
	}
	var out []Filter
	for _, f := range fs {
		bf, ok := f.(*netlink.BpfFilter)
		if !ok {
			continue
		}
		out = append(out, Filter{
			Priority:     bf.Priority,
			Handle:       bf.Handle,
			ProgramID:    ebpf.ProgramID(bf.Id),
			Name:         bf.Name,
			DirectAction: bf.DirectAction,
		})
	}
	slices.SortFunc(out, func(a, b Filter) int { return int(a.Priority) - int(b.Priority) })
	return out, nil
}

func filter(ifindex int, h bpf.Hook, prio uint16, handle uint32) (*netlink.BpfFilter, error) {
	parent, err := Parent(h)
	if err != nil {
		return nil, err
	}
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    parent,
			Priority:  prio,
			Handle:    handle,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           -1,
		DirectAction: true,
	}, nil
}

// Add attaches prog as a new direct-action filter at prio/handle; it fails
// if that filter exists.
func Add(ifindex int, h bpf.Hook, prio uint16, handle uint32, prog *ebpf.Program, name string) error {
	f, err := filter(ifindex, h, prio, handle)
	if err != nil {
		return err
	}
	f.Fd, f.Name = prog.FD(), name
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("add %s filter %s at priority %d on interface %d: %w", h, name, prio, ifindex, err)
	}
	return nil
}

// Replace attaches prog at prio/handle, atomically replacing the filter's
// program if the filter exists (one RCU pointer swap in cls_bpf).
func Replace(ifindex int, h bpf.Hook, prio uint16, handle uint32, prog *ebpf.Program, name string) error {
	f, err := filter(ifindex, h, prio, handle)
	if err != nil {
		return err
	}
	f.Fd, f.Name = prog.FD(), name
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("replace %s filter %s at priority %d on interface %d: %w", h, name, prio, ifindex, err)
	}
	return nil
}

// Delete removes the filter at prio/handle; a missing filter is not an
// error.
func Delete(ifindex int, h bpf.Hook, prio uint16, handle uint32) error {
	f, err := filter(ifindex, h, prio, handle)
	if err != nil {
		return err
	}
	err = netlink.FilterDel(f)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("delete %s filter at priority %d on interface %d: %w", h, prio, ifindex, err)
}
