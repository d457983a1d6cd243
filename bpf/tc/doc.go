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
// exits rewritten (rewrite.TCNext): each proceed-on verdict (default: ok)
// becomes -1, every other verdict is returned unchanged. This applies to the
// last program too: its "continue" lets the packet go on to whatever
// follows on the hook, and then to the stack, as a pass. Proceed-on names
// on TC: ok, shot, redirect, pipe, reclassify, unspec.
//
// # Changes
//
// A change keeps every program that runs unchanged (same key, that is code
// and parameters, same name and proceed-on) and whose relative order is
// kept (a longest increasing subsequence of the old positions): those links
// and filters are not touched and keep their program IDs (Component.Running
// is honoured as the same program). Then, in this order:
//
//  1. new programs are attached right after their predecessor's place (the
//     first one before the first old kfm program);
//  2. a new program takes the place of an old one in place where the old one
//     is an earlier version of the same name, or leaves the chain: a TCX
//     link update or a cls_bpf filter replace, each one atomic RCU pointer
//     swap, so upgrading a program at its place loses nothing and counts
//     nothing twice (tested under traffic);
//  3. the old programs that are left are detached.
//
// The hook is never without the chain, and a program that is in both the
// old and the new chain runs for every packet during the change. A chain
// change that moves programs is not atomic as a whole: TCX and cls_bpf offer
// no operation that reorders several programs at once. While a moved
// program is attached at both its old and its new place, packets pass it
// twice: measured over 50 reorders of two programs under about 10 000
// packets/s, 15 to 20% of the packets for tcx (every TCX attach and detach
// waits for an RCU grace period, so the window lasts milliseconds) and
// under 1% for tc, on the host and in the kernel VMs alike. Nothing was lost
// and no program was skipped. Where reorders must be atomic, the tailcall
// backend runs on TC hooks too.
//
// Classic tc places an inserted program halfway between its neighbours'
// priorities (new chains are spaced PriorityStep apart); when no priority is
// left between them, the whole chain is rebuilt at fresh priorities (every
// program attached anew, then the old ones detached).
//
// # Pins and recovery
//
//	<bpffs>/kfm/tcx/<ifindex>/<hook>/meta          description (JSON, see below)
//	<bpffs>/kfm/tcx/<ifindex>/<hook>/link-<id>     one pinned TCX link per program
//	<bpffs>/kfm/tc/<ifindex>/<hook>/meta           description (filters need no pins)
//
// meta is a one-entry array map (kfm_meta) holding JSON: for each program its
// name, function, priority, proceed-on, key, program id and tag, and its
// link id (tcx) or filter priority (tc). It is replaced atomically (a new pin
// renamed over the old). Commit writes it ahead, listing old and new
// programs, before touching the hook, and rewrites it with the final chain
// afterwards. Links are pinned as soon as they are attached (a link that is
// not pinned yet dies with the process, detaching its program). Current
// lists, in run order, the programs that run through a pinned link (tcx) or
// a filter whose program and priority meta describes (tc); other tools'
// programs on the hook are never part of kfm's chain and never touched. A
// pinned link that no longer runs, and a "kfm:" filter in kfm's band that
// meta does not describe, are leftovers of an interrupted run: the next
// Commit removes them. The clsact qdisc is left in place (other tools may
// use it).
//
// # Revert, Close, Release
//
// A change keeps the old programs open, so Revert moves the hook back by
// the same kind of steps. Close releases file descriptors only (links stay
// pinned, filters stay attached). Release detaches all of kfm's links or
// filters on the hook and removes the pins: used after another backend has
// taken the hook over.
package tc
