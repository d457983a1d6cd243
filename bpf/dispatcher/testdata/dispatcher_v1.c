//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * A version 1 dispatcher as libxdp 1.0 and 1.1 built them: no magic byte in
 * the configuration, the version only in the BTF of the xdp_metadata
 * section. Configured with two slots (priorities 10 and 20, continue on
 * XDP_PASS, and on XDP_PASS and XDP_DROP). For Inspect and Current tests:
 * load it with a libbpf tool (bpftool), which hands the whole BTF to the
 * kernel.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct config_v1 {
	__u8 num_progs_enabled;
	__u32 chain_call_actions[10];
	__u32 run_prios[10];
};

static volatile const struct config_v1 conf = {
	.num_progs_enabled = 2,
	.chain_call_actions = { (1U << 31) | (1U << XDP_PASS), (1U << 31) | (1U << XDP_PASS) | (1U << XDP_DROP) },
	.run_prios = { 10, 20 },
};

__attribute__((noinline)) int prog0(struct xdp_md *ctx)
{
	volatile int ret = 31;

	if (!ctx)
		return XDP_ABORTED;
	return ret;
}

__attribute__((noinline)) int prog1(struct xdp_md *ctx)
{
	volatile int ret = 31;

	if (!ctx)
		return XDP_ABORTED;
	return ret;
}

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	int ret;

	if (conf.num_progs_enabled < 1)
		return XDP_PASS;
	ret = prog0(ctx);
	if (!((1U << ret) & conf.chain_call_actions[0]))
		return ret;
	if (conf.num_progs_enabled < 2)
		return XDP_PASS;
	ret = prog1(ctx);
	if (!((1U << ret) & conf.chain_call_actions[1]))
		return ret;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
__uint(dispatcher_version, 1) SEC("xdp_metadata");
