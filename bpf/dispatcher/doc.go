// Package dispatcher chains XDP programs on an interface through a
// multi-program dispatcher, speaking libxdp's protocol (xdp-tools,
// lib/libxdp/protocol.org) so that kfm and libxdp tools such as xdp-loader
// share one chain: each reads, extends and shrinks what the other built.
// The peer it is tested against is libxdp 1.3.1 (Debian bookworm's
// xdp-tools).
//
// # The dispatcher
//
// xdp_dispatcher.c (compiled to the embedded xdp_dispatcher.o) is an XDP
// program named xdp_dispatcher with ten global, never-inlined slot
// functions prog0..prog9. It calls the enabled slots in turn; after each it
// goes on only if the slot's verdict is set in that slot's chain-call
// bitmap, else it returns the verdict; after the last enabled slot it
// returns XDP_PASS. An empty slot returns 31 (RetVal), whose bit is set in
// every slot's bitmap. The configuration is the program's only map, its
// .rodata: struct xdp_dispatcher_config of version 2 (124 bytes: magic 236,
// version, num_progs_enabled, is_xdp_frags, chain_call_actions[10],
// run_prios[10], program_flags[10]); see Config. The kernel freezes it, so
// the verifier drops the disabled slots. Each slot also (behind a condition
// that never holds at run time) calls bpf_xdp_adjust_tail, so that since
// Linux 6.13 programs that change packet data may replace it.
//
// # Building a chain (Prepare)
//
// Every change, whatever it is, builds a new dispatcher, as libxdp does:
//
//   - The configuration gets one slot per component in the given run order:
//     chain_call_actions[i] = the component's proceed-on verdicts | 1<<31,
//     run_prios[i] = its priority (kept there so that the next change,
//     kfm's or libxdp's, sorts programs again the same way),
//     program_flags[i] = BPF_F_XDP_HAS_FRAGS if it handles multi-buffer
//     packets. The dispatcher is loaded with BPF_F_XDP_HAS_FRAGS (and
//     is_xdp_frags = 1) only if every component does and the kernel knows
//     the flag (5.18).
//   - New components load as BPF_PROG_TYPE_EXT programs, without the frags
//     flag, replacing prog<i> of the new dispatcher, or, when the chain has
//     a single program, the dispatcher's main function xdp_dispatcher itself
//     (libxdp 1.3.1's xdp_multiprog__link_prog does this: such a program's
//     verdict is final even when it is in its proceed-on list). They attach
//     with freplace links.
//   - Components that already run (bpf.Component.Running; also programs
//     another tool loaded, which come with a nil Spec) are the same
//     programs attached a second time, to their new slot (Linux 5.10), so
//     their maps and state stay. Their frags flag is taken from the old
//     configuration's program_flags.
//
// Nothing touches the interface before Commit; on any failure everything
// loaded is closed and the error (wrapping bpf.ErrLoad) names the component
// and ends with the tail of the verifier log.
//
// # Pins, lock and the swap (Commit)
//
// Under flock(LOCK_EX) on <bpffs>/xdp (created 0700 if missing), Commit pins
// the new slots at <bpffs>/xdp/dispatch-<ifindex>-<dispatcher id>/prog<N>-link
// and prog<N>-prog, replaces the interface's XDP program with a netlink
// attach carrying XDP_FLAGS_REPLACE and IFLA_XDP_EXPECTED_FD = the old
// dispatcher (XDP_FLAGS_UPDATE_IF_NOEXIST when nothing ran; never a
// bpf_link, which libxdp could not replace), and then removes the old
// directory. The pins are what keep the component links alive after kfm
// exits. If another tool changed the interface since Prepare, the attach
// fails, the new pins are removed and Commit returns an error wrapping
// bpf.ErrConflict: the caller reads the chain again (Current) and prepares
// again; retrying with the stale chain would drop the other tool's change.
// Revert swaps back to the previous dispatcher (re-pinning it) and Close
// releases what the change holds. An empty desired chain detaches the
// dispatcher and removes its pins.
//
// # Reading (Current)
//
// The attached program is a dispatcher when it is called xdp_dispatcher and
// has exactly one map, a read-only array of one element with a 4-byte key
// whose value starts with the magic byte and the version, or, for version 1
// (libxdp 1.0-1.1, no magic), whose BTF says dispatcher_version 1 in its
// xdp_metadata section. Versions 1, 2 and 3 (libxdp 1.5: adds
// is_xdp_devbound at offset 124, 128 bytes) are read; the components are the
// prog<N>-prog pins; names come from BTF when the kernel truncated them.
// Like libxdp, kfm changes only dispatchers of its own version (2): a
// version 1 or 3 dispatcher would lock out the tool that loaded it. Any
// other program on the hook is foreign: kfm neither reads nor replaces it,
// and says how to remove it.
//
// The XDP attach mode (native or skb) of a running chain is kept; offload is
// refused.
package dispatcher
