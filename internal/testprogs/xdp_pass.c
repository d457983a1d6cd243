//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* xdp_pass: returns XDP_PASS and nothing else (the unit of per-hop cost). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
