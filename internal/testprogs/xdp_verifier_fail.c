//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * xdp_verifier_fail: compiles, but the kernel verifier rejects it. It reads
 * the first byte of the packet without checking it against data_end
 * ("invalid access to packet").
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_verifier_fail(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;

	if (data[0] == 0xff)
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
