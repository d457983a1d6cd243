package kernelvm

import "time"

// DefaultSuites is THE list of test packages that `make test-kernels` runs
// inside every kernel VM. To add a suite, append an entry; nothing else needs
// to change. Each package is built once with `CGO_ENABLED=0 go test -c` and
// runs with `-test.v`, KFM_REQUIRE_EXT=1 and KFM_REQUIRE_PRIVILEGED=1, so a
// test that would skip for lack of freplace or root fails instead.
//
// Fields (see Suite): Package is the directory relative to the module root;
// Run and Skip become -test.run and -test.skip; Kernels restricts the suite
// to kernels whose version starts with one of the given prefixes ("5.10",
// "6.1", "6.12"; empty means all); Timeout becomes -test.timeout (default
// DefaultSuiteTimeout); Files lists files or directories outside the
// package that its tests open by relative path (the package's own files
// are always there). A package may appear twice with different Run/Skip
// expressions as long as the two entries never apply to the same kernel.
//
// Example entries:
//
//	{Package: "bpf/dispatcher"},
//	{Package: "bpf/tc", Run: "^TestTCX", Kernels: []string{"6.12"}},
//	{Package: "chain", Files: []string{"bpf/testdata"}, Skip: "^TestTCX", Kernels: []string{"5.10", "6.1"}, Timeout: 10 * time.Minute},
func DefaultSuites() []Suite {
	return []Suite{
		// The point of the kernel VMs: EXT programs load and
		// freplace-attach here (TestEXT fails rather than skips).
		{Package: "bpf/probe"},
		// The VM environment itself: mounts, modules, ip netns, and
		// xdp-loader/bpftool from the initramfs (libxdp dispatcher).
		{Package: "internal/kernelvm/vmenv"},
		// Chains without freplace: the rewriter against each verifier,
		// tail-call chains on XDP and TC, classic tc everywhere, tcx from
		// 6.6 (bpf/tc's TestSupports checks that older kernels refuse it).
		{Package: "bpf/rewrite"},
		// Verdict counters and run statistics (BPF_ENABLE_STATS) on
		// each kernel: the counter lookup is a helper call before 6.10.
		{Package: "bpf/counters"},
		{Package: "bpf/internal/pinmeta"},
		{Package: "bpf/internal/rcu"},
		{Package: "bpf/tailcall", Timeout: 10 * time.Minute},
		// The libxdp-protocol dispatcher: freplace chains, real traffic,
		// and interop with xdp-loader 1.3.1 from the initramfs.
		{Package: "bpf/dispatcher", Timeout: 10 * time.Minute},
		{Package: "bpf/tc", Skip: "/^tcx$", Kernels: []string{"5.10", "6.1"}, Timeout: 10 * time.Minute},
		{Package: "bpf/tc", Kernels: []string{"6.12"}, Timeout: 10 * time.Minute},
		// Kernel compatibility: bpf_xdp_get_buff_len is refused on 5.10
		// with the helper named, accepted from 5.18.
		{Package: "bpf/compat"},
		// TestDispatcherPinsGone: the bpffs unmounted under a running
		// dispatcher chain. TestChangesUnderTraffic/dispatcher: random
		// changes to a dispatcher chain under traffic, every packet
		// accounted for (60 changes by default here: TCG takes 1-5 s a
		// change, so 1000 would take 20 minutes or more).
		{Package: "chain", Run: "^TestNetnsDispatcher$|^TestDispatcherPinsGone$|^TestChangesUnderTraffic$/^dispatcher$", Files: []string{"bpf/internal/chaintest/tag.o"}, Kernels: []string{"6.12"}, Timeout: 10 * time.Minute},
		// The model-based random test with the dispatcher backend
		// (issue 14), a small bound: the VMs emulate the CPU.
		{Package: "cmd/kfm", Run: "^TestModelDispatcher$", Kernels: []string{"6.12"}, Files: []string{"examples/programs", "internal/testprogs"}, Timeout: 20 * time.Minute},
		// The exporter reads a dispatcher chain's declared metrics.
		{Package: "chain/metrics", Files: []string{"examples/programs"}},
	}
}

// DefaultModules are the kernel modules every VM loads (with their
// dependencies from modules.dep, in dependency order) before the suites run.
// A module that is built into a kernel is skipped for that kernel.
func DefaultModules() []string {
	return []string{"veth", "sch_ingress", "cls_bpf"}
}

// DefaultSuiteTimeout is the -test.timeout of a suite that sets none.
const DefaultSuiteTimeout = 5 * time.Minute
