// Package tc holds kfm's two chain backends for the TC hooks, both without
// any chaining code in the programs:
//
//   - tcx (NewTCX, Linux 6.6): one TCX link per program, in run order among
//     kfm's links, placed with Before/After anchors relative to kfm's own
//     links (a first program goes after other tools' TCX programs);
//   - tc (NewTC, any kernel): a clsact qdisc and one direct-action cls_bpf
//     filter per program, one priority each, in the band MinPriority..
//     MaxPriority (0x2000-0xbfff), through netlink (never the tc binary).
//     Filters are named "kfm:<name>" (shown by `tc filter show`).
//
// In both, the next program runs only when a program returns -1
// (TC_ACT_UNSPEC, TCX_NEXT), while marketplace programs return TC_ACT_OK to
// pass a packet. kfm therefore loads every program with its main function's
// exits rewritten (rewrite.TCNextGated): each proceed-on verdict (default:
// ok) becomes -1, every other verdict is returned unchanged. This applies to
// the last program too: its "continue" lets the packet go on to whatever
// follows on the hook, and then to the stack, as a pass. Proceed-on names
// on TC: ok, shot, redirect, pipe, reclassify, unspec.
//
// # The gate: every change is atomic per packet
//
// TCX and cls_bpf have no operation that changes several programs of a
// hook at once: a reorder attaches the moved program at its new place
// before it detaches the old one, and without more, packets that pass
// meanwhile run it twice (measured before the gate: 15 to 20% of the
// packets during 50 reorders under traffic with tcx, under 1% with tc).
// kfm therefore decides once per packet which chain the packet runs:
//
//   - The first of kfm's programs on the hook is kfm's gate: a four-
//     instruction program (kfm_gate; TCX link pinned as "gate", or the
//     cls_bpf filter "kfm-gate" at priority GatePriority) that writes a
//     32-bit word into the packet's skb->cb[GateCB] (cb[4]) and returns -1,
//     so that whatever follows on the hook runs. Each bit of the word
//     stands for one of kfm's programs attached to the hook.
//   - Every program of the chain is loaded with a prologue of four
//     instructions (rewrite.TCNextGated): unless its own bit (Slot in the
//     description) is set in skb->cb[4], it returns -1 at once and runs
//     none of its code. No helper call, map or stack slot is needed.
//   - A change loads the new programs with bits that no attached program
//     has, attaches them (the gate's word does not have their bits: they
//     run for no packet), then replaces the gate program by one that
//     writes the new chain's bits: a TCX link update or a cls_bpf filter
//     replace, one atomic pointer swap. Every packet that passes the gate
//     from then on runs exactly the new chain; every packet that passed it
//     before runs exactly the old one, to its end (the old programs are
//     still attached). Then the old programs are detached. Programs that
//     stay keep their bit and run for both.
//
// cb[] is the scratch area cls_bpf and TCX programs share: the kernel
// neither clears nor saves it between the programs of one hook (checked by
// the swap tests under traffic on Linux 5.10, 6.1, 6.12 and 6.18: TCX runs
// its programs from one array, classic tc walks its filters, and
// qdisc_skb_cb's data[] is untouched between them). Nothing may be assumed
// about it when a packet reaches the hook, which is why the gate writes the
// whole word for every packet. After the hook the stack reuses cb for its
// own purposes (IPCB on ingress, the qdisc's data on egress), after having
// written it. A program of the chain that may write cb[4] itself (one that
// uses cb[] for its own purposes) is guarded by the rewrite: it saves the
// word on entry and writes it back whenever it lets the packet go on, so
// the programs after it still see the gate's choice (it costs 16 bytes of
// the program's stack and five instructions). Other tools' programs placed
// between kfm's must not write cb[4]; other tools' programs before or after
// kfm's chain may use it freely (the gate writes it anew, and nothing of
// kfm's reads it after the chain). A TC program that runs in a
// kfm chain cannot be run on its own with BPF_PROG_TEST_RUN unless the
// context given sets its bit in cb[4].
//
// Because the old and the new chain are attached together during a
// change, each with its own bits, a chain has at most MaxPrograms (16)
// programs: GateSlots (32) bits for both. One word keeps kfm's claim on the
// shared cb[] as small as possible.
//
// Classic tc walks its filters under RCU while they are added and
// deleted, so a change on tc waits for an RCU grace period (bpf/internal/rcu)
// after the inserts and before the switch (every packet that sees the new
// gate sees every inserted filter), and after the switch before the
// deletes (no packet that passed the old gate is still on its way to an old
// filter). TCX needs no extra wait: a packet runs the array of programs it
// read when it reached the hook, and every TCX attach and detach publishes a
// new array and waits for a grace period itself; the gate's link update
// changes the program of one array slot.
//
// A program that is upgraded in place (a new version of the same name, or
// a new program where one leaves the chain, at the same place) in a change
// that does nothing else takes the old program's link or filter and bit:
// one pointer swap, atomic by itself, without the gate. Within a change
// that also inserts, moves or removes programs, the gate cannot tell two
// programs of one link apart, so there the new version is inserted like
// any new program (a new link or filter priority) and the old one removed.
//
// Costs (BPF_PROG_TEST_RUN and veth, see bpf/internal/chainbench): the
// prologue adds about 1 ns per program, the gate one more program on the
// hook. A change on tc takes two RCU grace periods more than without the
// gate (about 10 ms each on an idle machine); on tcx one link update more.
//
// # Changes
//
// A change keeps every program that runs unchanged (same key, that is code
// and parameters, same name and proceed-on) and whose relative order is
// kept (a longest increasing subsequence of the old positions): those links
// and filters are not touched and keep their program IDs and gate bits
// (Component.Running is honoured as the same program). Commit then:
//
//  1. removes what interrupted runs left (below);
//  2. attaches the gate, letting no program run, if the hook has none;
//  3. attaches the new programs right after their predecessor's place (the
//     first one before the first old kfm program, or after the gate);
//  4. switches the gate to the new chain;
//  5. detaches the old programs that are left, and the gate when the new
//     chain is empty.
//
// Classic tc places an inserted program halfway between its neighbours'
// priorities (new chains are spaced PriorityStep apart, above the gate);
// when no priority is left between them, the whole chain is rebuilt at
// fresh priorities (every program attached anew, the gate switched, the old
// ones detached).
//
// # Pins and recovery
//
//	<bpffs>/kfm/tcx/<ifindex>/<hook>/meta          description (JSON, see below)
//	<bpffs>/kfm/tcx/<ifindex>/<hook>/gate          the gate's pinned TCX link
//	<bpffs>/kfm/tcx/<ifindex>/<hook>/link-<id>     one pinned TCX link per program
//	<bpffs>/kfm/tc/<ifindex>/<hook>/meta           description (filters need no pins)
//
// (With <netns>/ before <ifindex> for an interface in another network
// namespace than the caller's, see bpf.Target.Netns.)
//
// meta is a one-entry array map (kfm_meta) holding JSON: for each program its
// name, function, priority, proceed-on, key, program id and tag, gate bit,
// and its link id (tcx) or filter priority (tc); and for each gate program
// its id and the word it writes. It is replaced atomically (a new pin
// renamed over the old). Commit writes it ahead, listing old and new
// programs and gate programs, before touching the hook, and rewrites it
// with the final chain afterwards. Links are pinned as soon as they are
// attached (a link that is not pinned yet dies with the process, detaching
// its program). Current lists, in run order, the programs that run through
// a pinned link (tcx) or a filter whose program and priority meta describes
// (tc) and whose bit the attached gate writes: after a run that died at any
// point that is exactly the old chain or exactly the new one, since the
// gate switches in one step. Other tools' programs on the hook are never
// part of kfm's chain and never touched. Programs of kfm's that the gate
// keeps from running, pinned links that no longer run, and "kfm:" filters
// in kfm's band that meta does not describe are leftovers of an
// interrupted run: the next Commit removes them first (on tc followed by a
// grace period, before their bits are given out again). A gate that meta
// does not describe lets no program of kfm's count as running; the next
// Commit replaces its program. The clsact qdisc is left in place (other
// tools may use it).
//
// A description of version 1 (written before the gate existed) is read as
// a chain of ungated programs: they run for every packet; the next change
// replaces them all (non-atomically, once) by gated ones.
//
// # Revert, Close, Release
//
// A change keeps the old programs and the old gate program open, so Revert
// moves the hook back by the same kind of steps, with the same atomic
// switch. Close releases file descriptors only (links stay pinned, filters
// stay attached). Release switches the gate so that none of kfm's programs
// runs, then detaches all of kfm's links or filters and the gate, and
// removes the pins: used after another backend has taken the hook over.
package tc
