// Package counters reads kfm's verdict counters and the kernel's run
// statistics of BPF programs.
//
// # Verdict counters
//
// kfm counts, for every program it chains, the packets per verdict the
// program returned. Programs carry no code for this: when a backend loads a
// program, kfm's rewriter (rewrite.Count, ahead of the backend's own
// rewrite) sends every exit of the program's main function through one
// epilogue that adds one to a per-CPU counter of the verdict, then returns
// the verdict unchanged. It sees the program's own verdict, before the
// tailcall backend turns it into a tail call or tcx and tc turn a
// proceed-on verdict into -1. The same instructions serve every backend:
// EXT programs under the XDP dispatcher, tail-called programs, tcx and tc.
//
// The counters of one program live in one map (MapSpec): a
// BPF_MAP_TYPE_PERCPU_ARRAY with one entry whose value holds Slots 64-bit
// counters, slot i counting verdict i-1 for verdicts -1 to 7 and the last
// slot everything else (see rewrite.CountSlot). The chain layer pins it with
// the program's state maps, at
//
//	<bpffs>/kfm/maps/<ifindex>/<hook>/<program>/kfm-counters
//
// so that counts survive reorders, reloads and upgrades as the program's
// own state does. kfm.yaml switches them off per program or per chain
// (counters: false). They cost the program a lookup that the kernel inlines
// for per-CPU arrays (6.10 and later; a helper call before) and an
// increment: about a nanosecond per packet (see BenchmarkCounters in
// bpf/internal/chainbench).
//
// [Read] sums a counter map over the CPUs into [Counts]; [Counts.Verdicts]
// names them in a fixed order for a hook (XDP: aborted, drop, pass, tx,
// redirect, other; TC: ok, shot, redirect, next, other).
//
// # Kernel run statistics
//
// The kernel counts runs and run time (struct bpf_prog_info's run_cnt and
// run_time_ns) only while statistics are enabled: while some process holds
// the file descriptor of BPF_ENABLE_STATS ([EnableStats]; kfm stats
// --interval does, for as long as it samples) or while the sysctl
// kernel.bpf_stats_enabled is 1 ([SetSysctl]: host-wide, and it stays on;
// kfm sets it only when asked). The kernel times only programs it runs from
// a hook: the XDP dispatcher and the tailcall backend's root, each program
// of tcx and tc. Extensions (freplace) under the dispatcher and programs
// reached by tail calls are never timed on their own: their time is in the
// dispatcher's or the root's.
package counters
