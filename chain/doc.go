// Package chain turns what a host wants (programs on hooks, in priority
// order) into what the kernel runs: it resolves programs, plans changes,
// applies them through a Backend, and keeps host state.
//
// A Backend realises chains on one kind of hook attachment: the libxdp
// dispatcher, tail calls, TCX links or classic cls_bpf filters. Backends live
// under bpf/ and share the vocabulary of package bpf (Target, Component,
// Chain, Change); this package only depends on them through the Backend
// interface.
//
// # Network namespaces
//
// A chain may sit on an interface in another network namespace (netns: in
// kfm.yaml and kfm.lock, --netns NAME|PATH on the command line,
// HookSpec.Netns, InstallRequest.Netns, RemoveIn, StatusIn). NAME means
// /run/netns/NAME; a PATH is any namespace file (a bind mount,
// /proc/PID/ns/net). kfm keeps the host's BPF filesystem, state directory
// and configuration: it never runs under `ip netns exec` (which unshares the
// mount namespace and remounts /sys, hiding the host's bpffs; kfm refuses to
// run there, see ErrPrivateBPFFS). Instead every backend call for such a
// chain runs on an OS thread that kfm locks and switches into the namespace
// (setns), and comes back before the thread is given back to Go; interface
// lookups and link dumps go through a netlink handle opened in the
// namespace. XDP attach and TCX attach resolve the ifindex in the calling
// thread's namespace, so the switch is needed, and it covers the netlink
// sockets of XDP and cls_bpf attach too.
//
// A namespace is identified by its cookie (SO_NETNS_COOKIE), which the kernel
// never reuses before a reboot; on kernels before 5.14 by the device and
// inode of its namespace file, which can be reused once the namespace is gone.
// Pins of a chain in another namespace live under
// <bpffs>/kfm/<store>/ns-<cookie>/<ifindex>/<hook> (see bpf.Target.PinDir);
// the namespace kfm runs in keeps the layout of earlier kfm versions,
// <bpffs>/kfm/<store>/<ifindex>/<hook>, and a namespace path that leads to
// kfm's own namespace is the host. Host state entries record the path, the
// cookie, the ifindex and the hardware address.
//
// The dispatcher keeps libxdp's layout, <bpffs>/xdp/dispatch-<ifindex>-<id>,
// in every namespace, so that xdp-loader run in the namespace with the host's
// bpffs (nsenter --net, not ip netns exec) shares the chain: the dispatcher's
// program ID is unique system-wide, so two namespaces never share a
// directory. What libxdp's layout cannot say is which namespace a directory
// belongs to: libxdp's own clean-up (and the dispatcher backend's Release
// after a backend switch) goes by ifindex in the calling namespace and could
// take another namespace's directory. For a chain in another namespace kfm
// therefore removes only directories it knows: the replaced dispatcher's
// after a backend switch, and the one its host state recorded for a deleted
// interface (HookState.RootID).
//
// # Interfaces that disappear
//
// Deleting an interface detaches its programs, but pins (program arrays,
// TCX links, maps) keep them loaded, and a later interface with the same
// ifindex would inherit their state. Linux has no generation number for
// network devices; kfm identifies an interface by namespace, ifindex and
// hardware address (the name when there is no address, and for state written
// by earlier versions). Every install, remove, apply and status first prunes
// (Prune): with one link dump per namespace the host state names, it drops
// the state of interfaces that are gone or replaced, removes their pin
// directories in every store (maps, tailcall, tcx, tc, and the recorded
// dispatcher), and removes pin directories no state accounts for whose
// interface (host) or namespace no longer exists. The node agent calls
// Release(ctx, netns, ifindex) on a netlink link-delete event to do the same
// at once for one interface. A plan that finds kfm's chain gone from a hook
// although the state names it (a replaced interface with a cloned address,
// or a chain detached by hand) starts from empty maps.
package chain

// # Statistics
//
// [Manager.Stats] returns a snapshot of every chain ([ChainStats]): per
// program, in run order, the packets per verdict from kfm's verdict
// counters (package bpf/counters; injected at load on every backend, pinned
// with the program's state, switched off with counters: false in kfm.yaml)
// and the kernel's run statistics where the kernel keeps them (tcx and tc
// programs; for the dispatcher and tailcall backends only the program on
// the hook, whose time is the whole chain's). [WithRates] turns two
// snapshots into rates. An exporter calls Stats per scrape; `kfm stats
// --interval` holds counters.EnableStats between its two snapshots.
