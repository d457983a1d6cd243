//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * Test programs for the dispatcher backend. None has chaining code: the
 * dispatcher chains them. Each one acts on IPv4 UDP packets to the port
 * param (0: all) and counts them in its counter map.
 */
#include "progs.h"

/* Param: what count_udp_packets returns for the packets it counts. */
volatile const __u32 verdict = XDP_PASS;

/* Counts and returns verdict. Its name is longer than the kernel's 15
 * characters, to test that names come from BTF. */
SEC("xdp")
int count_udp_packets(struct xdp_md *ctx)
{
	if (!udp_match(ctx))
		return XDP_PASS;
	count();
	return verdict;
}

/* Counts and drops. */
SEC("xdp")
int drop_udp(struct xdp_md *ctx)
{
	if (!udp_match(ctx))
		return XDP_PASS;
	count();
	return XDP_DROP;
}

/* Passes everything. */
SEC("xdp")
int pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Changes packet data (a no-op bpf_xdp_adjust_head), counts and passes: since
 * Linux 6.13 only a slot that may change packet data may be replaced by it. */
SEC("xdp")
int adjust_head(struct xdp_md *ctx)
{
	if (!udp_match(ctx))
		return XDP_PASS;
	if (bpf_xdp_adjust_head(ctx, 0))
		return XDP_ABORTED;
	count();
	return XDP_PASS;
}

/* Handles multi-buffer packets: counts and passes. */
SEC("xdp.frags")
int frags_pass(struct xdp_md *ctx)
{
	if (!udp_match(ctx))
		return XDP_PASS;
	count();
	return XDP_PASS;
}

/* Reads past the packet without a bounds check: the verifier refuses it. */
SEC("xdp")
int verifier_fail(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;

	return data[64] == 0xff ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
