//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * Programs that exercise the corners of kfm's rewriter: bpf-to-bpf calls
 * (static and global functions, whose BTF func info must stay valid), a large
 * stack frame, several exits, and programs the verifier refuses.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 verdict = XDP_PASS;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __attribute__((noinline)) int bump(__u32 key)
{
	__u64 *c = bpf_map_lookup_elem(&hits, &key);

	if (!c)
		return 0;
	__sync_fetch_and_add(c, 1);
	return 1;
}

__attribute__((noinline)) int global_len(struct xdp_md *ctx)
{
	if (!ctx)
		return 0;
	return ctx->data_end - ctx->data;
}

SEC("xdp")
int xdp_subprog(struct xdp_md *ctx)
{
	if (global_len(ctx) < 14)
		return XDP_DROP;
	if (!bump(0))
		return XDP_ABORTED;
	return verdict;
}

/* xdp_bigstack keeps 480 bytes of its stack alive across a helper call. */
SEC("xdp")
int xdp_bigstack(struct xdp_md *ctx)
{
	volatile __u64 buf[60];
	__u32 key = 0;
	__u64 *c;

	for (int i = 0; i < 60; i++)
		buf[i] = i;
	c = bpf_map_lookup_elem(&hits, &key);
	if (c)
		*c += buf[(ctx->data_end - ctx->data) & 31];
	return verdict;
}

/* xdp_fail reads packet data without a bounds check: always refused. */
SEC("xdp")
int xdp_fail(struct xdp_md *ctx)
{
	unsigned char *p = (void *)(long)ctx->data;

	return p[20] == 1 ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int tc_fail(struct __sk_buff *skb)
{
	unsigned char *p = (void *)(long)skb->data;

	return p[20] == 1 ? TC_ACT_SHOT : TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
