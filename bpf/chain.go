package bpf

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/cilium/ebpf"
)

// This file holds the vocabulary shared by the chain package and the
// backends (dispatcher, tailcall, tcx, tc) that realise chains in the kernel.
// The backends implement the chain package's Backend interface with these
// types, so that they need not import chain.

// Errors backends return for conditions callers branch on.
var (
	// ErrForeignProgram: the hook runs a program the backend does not
	// manage and must not replace (e.g. a legacy XDP program). The error
	// names the program and says how to remove it.
	ErrForeignProgram = errors.New("hook is used by a program kfm does not manage")
	// ErrConflict: another process changed the hook between Prepare and
	// Commit, and retrying did not help.
	ErrConflict = errors.New("hook changed concurrently")
	// ErrUnsupportedKernel: the backend cannot work on this kernel.
	ErrUnsupportedKernel = errors.New("not supported by this kernel")
	// ErrLoad: a program failed to load (the verifier refused it). The error
	// names the program and ends with the tail of the verifier log.
	ErrLoad = errors.New("program failed to load")
)

// Target is one hook of one network interface: where a chain runs. Backends
// act in the network namespace of the calling OS thread: a caller that
// chains programs in another namespace runs them on a thread switched into
// it (XDP and TCX attach, and netlink sockets, resolve the ifindex there).
type Target struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Hook      Hook   `json:"hook"`
	// Netns keys pins by network namespace, so that the same ifindex in
	// two namespaces never shares a directory: "" for the namespace the
	// caller runs in (the host; pins stay where kfm always put them),
	// else a name unique to the namespace for the life of the system
	// (the chain package uses "ns-<netns cookie>"). It is a path element
	// of PinDir; it must not contain '/' or '.'.
	Netns string `json:"netns,omitempty"`
	// BPFFS is the BPF filesystem mount backends pin under
	// (libxdp's <bpffs>/xdp/..., kfm's <bpffs>/kfm/...).
	BPFFS string `json:"-"`
}

func (t Target) String() string { return fmt.Sprintf("%s/%s", t.Interface, t.Hook) }

// PinDir is where store (a backend's name, or "maps") keeps what it pins for
// t: <bpffs>/kfm/<store>/<ifindex>/<hook> for the host namespace and
// <bpffs>/kfm/<store>/<netns>/<ifindex>/<hook> for another one.
func (t Target) PinDir(store string) string {
	return filepath.Join(t.BPFFS, "kfm", store, t.Netns, strconv.Itoa(t.Ifindex), string(t.Hook))
}

// Component is one program of a desired chain, as the chain layer hands it
// to a backend's Prepare.
type Component struct {
	// Name identifies the program in the chain (unique per target).
	Name string
	// Priority orders the chain (lower runs first; ties by Name). The
	// slice given to Prepare is already in run order.
	Priority int
	// ProceedOn are the verdicts on which the packet goes on to the next
	// program.
	ProceedOn Actions

	// Spec holds the program to load, params already set, and Function
	// names its entry function in Spec.Programs (other programs may be
	// present and must be ignored). Backends modify Spec freely (program
	// type, attach target, rewritten instructions): it is theirs.
	// Spec is nil only for a foreign component (see Running).
	Spec     *ebpf.CollectionSpec
	Function string
	// Key identifies code and parameters (object digest, function,
	// params): equal keys mean the same program.
	Key string
	// Maps replace the maps of the same name in Spec when loading
	// (ebpf.CollectionOptions.MapReplacements), so that state survives
	// reloads and upgrades. Owned by the caller; backends must not close
	// them.
	Maps map[string]*ebpf.Map
	// Counters is the component's verdict counter map (package
	// bpf/counters), nil for none. Backends that load the component count
	// its verdicts into it (rewrite.Count, ahead of their own rewrite).
	// Owned by the caller, like Maps.
	Counters *ebpf.Map

	// Running is the kernel program that already runs this component on
	// the target, zero if none. A backend that can keep a loaded program
	// (the dispatcher re-attaches it) keeps it instead of loading Spec; the
	// others load Spec again. A component with Running set and Spec nil is
	// foreign (loaded by another tool, e.g. xdp-loader): only backends that
	// can keep programs accept it.
	Running ebpf.ProgramID
}

// Chain is what runs on a target, as a backend reads it from the kernel.
type Chain struct {
	Target  Target `json:"target"`
	Backend string `json:"backend"`
	// Mode is the XDP attach mode ("native" or "skb"); empty for TC.
	Mode string `json:"mode,omitempty"`
	// RootID is the program attached to the hook itself ahead of the
	// chain: the dispatcher, the tail-call root, or the gate of tcx and
	// tc (which changes with every change of the chain).
	RootID ebpf.ProgramID `json:"rootId,omitempty"`
	// Version is the dispatcher protocol version (dispatcher only).
	Version int `json:"version,omitempty"`
	// Programs in run order.
	Programs []ChainProgram `json:"programs"`
}

// ChainProgram is one program running in a chain.
type ChainProgram struct {
	// Name is the program's name as the kernel knows it (the BTF function
	// name when the kernel's 15-character name is truncated).
	Name      string         `json:"name"`
	Priority  int            `json:"priority"`
	ProceedOn Actions        `json:"proceedOn"`
	ID        ebpf.ProgramID `json:"programId"`
	Tag       string         `json:"tag"`
}

// PrepareOptions tune a Prepare.
type PrepareOptions struct {
	// XDPMode is "native" (default) or "skb". Offload is refused.
	XDPMode string
	// Replace is the chain of another backend that runs on the target now
	// and that this change replaces (a backend switch), nil otherwise.
	// Backends that attach the same way (e.g. XDP through netlink) replace
	// it atomically; the caller then removes the old backend's leftovers
	// with that backend's Release.
	Replace *Chain
}

// Change is a prepared chain change: everything is loaded and has passed the
// verifier, but the hook still runs the previous chain until Commit.
type Change interface {
	// Programs describes the chain as it will run after Commit, with the
	// kernel IDs of the programs already loaded for it (so that callers
	// can record them before they commit).
	Programs() []ChainProgram
	// Commit switches the hook to the new chain in one atomic step where
	// the kernel allows it, and cleans up what the previous chain left
	// (pins, programs).
	Commit(ctx context.Context) error
	// Revert restores the chain that ran before Commit. Only valid after a
	// successful Commit and before Close; used when a later hook of the
	// same transaction fails.
	Revert(ctx context.Context) error
	// Close releases everything Prepare loaded that is not in use by the
	// hook. It is always called, after Commit or instead of it; after Close
	// the change can no longer be reverted.
	Close() error
}
