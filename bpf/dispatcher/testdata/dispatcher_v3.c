//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * A version 3 dispatcher configuration (libxdp 1.5: version 2 plus is_xdp_devbound),
 * on a program that runs no slot: for Inspect and Current tests. Two slots
 * are configured (priorities 10 and 20, continue on XDP_PASS, and on XDP_PASS
 * and XDP_DROP), the second one frags-aware.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct config_v3 {
	__u8 magic;
	__u8 dispatcher_version;
	__u8 num_progs_enabled;
	__u8 is_xdp_frags;
	__u32 chain_call_actions[10];
	__u32 run_prios[10];
	__u32 program_flags[10];
	__u8 is_xdp_devbound;
};

static volatile const struct config_v3 conf = {
	.magic = 236,
	.dispatcher_version = 3,
	.num_progs_enabled = 2,
	.chain_call_actions = { (1U << 31) | (1U << XDP_PASS), (1U << 31) | (1U << XDP_PASS) | (1U << XDP_DROP) },
	.run_prios = { 10, 20 },
	.program_flags = { 0, BPF_F_XDP_HAS_FRAGS },
	.is_xdp_devbound = 1,
};

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	return conf.num_progs_enabled > 10 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
