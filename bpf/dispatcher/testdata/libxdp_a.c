//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * A program as xdp-loader users write them, with libxdp's XDP_RUN_CONFIG
 * metadata (priority 15, continue on XDP_PASS): counts IPv4 UDP packets to
 * the port param and passes everything.
 */
#include "progs.h"
#include <xdp/xdp_helpers.h>

struct {
	__uint(priority, 15);
	__uint(XDP_PASS, 1);
} XDP_RUN_CONFIG(libxdp_a);

SEC("xdp")
int libxdp_a(struct xdp_md *ctx)
{
	if (udp_match(ctx))
		count();
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
