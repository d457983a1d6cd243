//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * xdp_subprog: an XDP program with bpf-to-bpf calls, for the tail-call
 * injector (whose exit rewriting must touch the main function's exits only)
 * and for kernels that refuse calls mixed with tail calls (< 5.10).
 *
 * xdp_subprog calls the global function xdp_subprog_verdict (verified on its
 * own, through BTF), which picks a verdict by EtherType:
 *   IPv4 -> XDP_PASS, IPv6 -> XDP_DROP, ARP -> XDP_TX, shorter than an
 *   Ethernet header -> XDP_ABORTED, anything else -> XDP_PASS.
 * The main function returns XDP_ABORTED and XDP_DROP at once, turns XDP_TX
 * into XDP_PASS (it never bounces a frame), and hands XDP_PASS to the static
 * subprogram count_verdict, which counts it in `verdicts` and returns it.
 *
 * clang merges every return of a function into one exit instruction; other
 * compilers (GCC's BPF backend) and hand-written code do not. EXIT_NOW makes
 * the early returns of the main function real exit instructions, so that
 * the main function has three.
 *
 * Maps:
 *   verdicts  ARRAY, 5 entries of __u64, indexed by verdict: how often
 *             count_verdict saw each verdict.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Returns verdict v from the current function with its own exit instruction. */
#define EXIT_NOW(v)                                                   \
	do {                                                          \
		asm volatile("r0 = %[verdict]\n\texit"                \
			     : : [verdict] "i"(v) : "r0");            \
		__builtin_unreachable();                              \
	} while (0)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

__attribute__((noinline)) int xdp_subprog_verdict(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = (void *)(long)ctx->data;

	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return XDP_PASS;
	case bpf_htons(ETH_P_IPV6):
		return XDP_DROP;
	case bpf_htons(ETH_P_ARP):
		return XDP_TX;
	}
	return XDP_PASS;
}

static __attribute__((noinline)) int count_verdict(__u32 verdict)
{
	__u64 *n = bpf_map_lookup_elem(&verdicts, &verdict);

	if (n)
		__sync_fetch_and_add(n, 1);
	return verdict;
}

SEC("xdp")
int xdp_subprog(struct xdp_md *ctx)
{
	int verdict = xdp_subprog_verdict(ctx);

	if (verdict == XDP_ABORTED)
		EXIT_NOW(XDP_ABORTED);
	if (verdict == XDP_DROP)
		EXIT_NOW(XDP_DROP);
	if (verdict == XDP_TX)
		verdict = XDP_PASS;
	return count_verdict(verdict);
}

char _license[] SEC("license") = "GPL";
