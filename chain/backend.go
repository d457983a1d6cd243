package chain

import (
	"context"

	"github.com/kfm-project/kfm/bpf"
)

// Backend realises chains in the kernel. Implementations: bpf/dispatcher
// (XDP, libxdp protocol), bpf/tailcall (XDP and TC), bpf/tc (tcx and
// classic tc).
type Backend interface {
	// Name is the backend's name as users write it: dispatcher, tailcall,
	// tcx or tc.
	Name() string
	// Supports reports whether the backend can chain programs on hook h
	// on this kernel: nil, or an error that says why not (wrapping
	// bpf.ErrUnsupportedKernel when the kernel lacks a feature).
	Supports(h bpf.Hook) error
	// Current reads the chain this backend runs on t from the kernel and
	// its pins. It returns nil, nil when the backend runs nothing there.
	Current(ctx context.Context, t bpf.Target) (*bpf.Chain, error)
	// Prepare loads the desired chain (in run order) without changing
	// what runs on t. An empty desired chain prepares the removal of
	// everything the backend runs on t. On error nothing stays loaded or
	// pinned and the hook is untouched.
	Prepare(ctx context.Context, t bpf.Target, desired []bpf.Component, opts bpf.PrepareOptions) (bpf.Change, error)
	// Release removes the backend's leftovers (pins, programs) for t after
	// another backend has taken the hook over; it does not touch the hook.
	Release(ctx context.Context, t bpf.Target) error
}
