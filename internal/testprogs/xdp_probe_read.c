//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * xdp_probe_read: an XDP program that calls bpf_probe_read_kernel, a helper
 * no packet program needs (it reads arbitrary kernel memory; the kernel
 * allows it with CAP_PERFMON). kfm's default capability policy refuses it.
 * It copies the first byte of the frame with bpf_probe_read_kernel and
 * returns XDP_PASS.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_probe_read(struct xdp_md *ctx)
{
	__u8 first = 0;

	bpf_probe_read_kernel(&first, sizeof(first), (void *)(long)ctx->data);
	return first == 0xff ? XDP_PASS : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
