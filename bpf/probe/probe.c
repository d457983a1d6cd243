//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * Feature probe objects for kfm's backend selection.
 *
 * kfm_probe is an XDP program that calls one global (BTF-described) function,
 * kfm_probe_target. kfm_probe_ext replaces that function through freplace:
 * if the kernel loads it and attaches it, and attaches it a second time to a
 * second instance of the target (the "re-attach" libxdp relies on since
 * Linux 5.10), the dispatcher backend can work.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__attribute__((noinline)) int kfm_probe_target(struct xdp_md *ctx)
{
	volatile int ret = XDP_PASS;

	if (!ctx)
		return XDP_ABORTED;
	return ret;
}

SEC("xdp")
int kfm_probe(struct xdp_md *ctx)
{
	return kfm_probe_target(ctx);
}

SEC("freplace/kfm_probe_target")
int kfm_probe_ext(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
