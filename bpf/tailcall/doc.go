// Package tailcall is kfm's tail-call backend: it chains XDP and TC programs
// that contain no chaining code, on any kernel that has tail calls (the only
// way to chain XDP programs below Linux 5.10, or where the kernel refuses
// freplace programs).
//
// # How a chain runs
//
// kfm attaches its own small root program (root.c, embedded as root.o) to
// the hook. The root tail-calls slot 0 of a one-entry PROG_ARRAY, the head,
// which holds the first program of the current chain. Each chain has ONE
// PROG_ARRAY of its own (kfm_chain, 32 slots) holding its programs in run
// order. kfm loads every program with its instructions rewritten (package
// rewrite): the program at position i tail-calls slot i+1 of its chain's
// array when it returns one of its proceed-on verdicts; at the end of the
// chain (an empty slot) the tail call falls through and the verdict stands.
// A program with no proceed-on verdict is loaded unchanged and ends the chain.
//
// The XDP root attaches with netlink (bpf/xdp, XDP_FLAGS_REPLACE with
// IFLA_XDP_EXPECTED_FD; not a bpf_link), so that a switch between this
// backend and the dispatcher backend is one atomic netlink replace in either
// direction. The TC root attaches with a TCX link where the kernel has TCX
// (Linux 6.6), appended after other TCX programs (put first when it replaces
// another kfm backend's chain), and otherwise as a direct-action cls_bpf
// filter at priority and handle RootPriority (0x1000) under a clsact qdisc.
// With an empty head the root returns XDP_PASS, or TC_ACT_UNSPEC (TCX_NEXT)
// so that whatever follows on the TC hook runs.
//
// # Pins
//
//	<bpffs>/kfm/tailcall/<ifindex>/<hook>/
//	    root            the root program (what the hook runs)
//	    root_link       TC with TCX: the root's link
//	    head            the 1-entry PROG_ARRAY the root tail-calls
//	    gen-<N>/chain   generation N: the chain's PROG_ARRAY
//	    gen-<N>/meta    generation N: its description (JSON in a one-entry
//	                    array map named kfm_meta: name, function, priority,
//	                    proceed-on, key, program id and tag of each program)
//
// For an interface in another network namespace than the caller's the
// directory is <bpffs>/kfm/tailcall/<netns>/<ifindex>/<hook> (see
// bpf.Target.Netns), so equal ifindexes in two namespaces never share pins.
//
// The current generation is the one whose slot 0 holds the program in the
// head's slot 0. Current reads the chain from there; it returns nil unless
// the pinned root is what the hook runs. The kernel clears a PROG_ARRAY when
// the last user reference (file descriptor or pin) goes, so the pins are
// what keeps a chain alive after kfm exits. Component state maps are not
// pinned here: the chain layer keeps them (under <bpffs>/kfm/maps/...) and
// passes them in Component.Maps, so counters survive every change.
//
// # Changes are atomic
//
// Prepare builds a complete new generation: a new chain PROG_ARRAY, and a
// new instance of every program (positions are baked into the rewritten
// instructions, so even unchanged programs are loaded again; their maps are
// the same), rewritten for its new position, verified by the kernel, and
// put into the new array, which is then pinned with its description. The
// hook still runs the old chain. Commit then updates slot 0 of the head:
// one map update, after which new packets enter the new chain while packets
// already inside the old one finish there, because the old array and its
// programs stay intact. Commit waits for an RCU grace period (see
// bpf/internal/rcu) before unpinning the old generation, so the kernel's
// clearing of the old array cannot cut a packet's chain short. No packet
// sees a half-built chain or a mix of two chains; the swap tests count every
// packet in every program under traffic.
//
// The first install fills the head before it attaches the root; removal
// (Prepare with an empty chain) detaches the root before it unpins.
//
// # Crash safety
//
// Every state a killed kfm process can leave is recognisable: a generation
// directory not referenced by the head is garbage (Prepare's Commit removes
// every generation but the new one); root and head pins whose root is not
// attached are garbage (Current reports nothing, the next install replaces
// them); a process killed after the head switch but before the old
// generation is unpinned leaves the old generation as garbage. Programs not
// pinned or referenced from a pinned array die with the process.
//
// # Revert, Close, Release
//
// A change keeps the old generation's objects open until Close, so Revert
// can re-pin them and point the head back (or re-attach the root after a
// removal, or detach it after a first install). Close unpins an uncommitted
// (or reverted) generation. Release removes every pin; on TC hooks it also
// detaches kfm's root (TC programs coexist, so after a switch to another
// backend the root would otherwise keep running); on XDP it touches nothing
// attached (the new backend's program has replaced the root).
//
// # Limits
//
// The rewritten programs compare verdicts with 32-bit jumps (Linux 5.1);
// kfm's kernel tests run 5.10, 6.1, 6.12 and the host's 6.18. At most
// MaxPrograms (32) programs, so that the root's tail call and 31
// between programs stay within the kernel's per-packet limit. Programs that
// make bpf-to-bpf calls are refused, with ErrMixedCalls, on kernels whose
// verifier refuses tail calls from such programs (before 5.10; a probe
// decides, not the version number). A main function that uses all 512 bytes
// of stack cannot be rewritten (rewrite.ErrNoStackRoom). XDP programs lose
// the multi-buffer (frags) flag: a tail call between programs of different
// frags flags is refused, and the root has none. A program that itself
// tail-calls into its own PROG_ARRAY leaves the chain there. The verdict of
// the chain is the verdict of the last program that ran (on TC, TC_ACT_OK
// ends a TCX or cls_bpf hook: programs attached after kfm's root do not run
// then; use the tcx or tc backend to coexist with them).
package tailcall
