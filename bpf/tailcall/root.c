//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * kfm's tail-call roots: the programs the tailcall backend attaches to a
 * hook. Each tail-calls slot 0 of kfm_head, a one-entry PROG_ARRAY that
 * points at the first program of the chain currently in force; switching a
 * chain is one update of that slot. When the slot is empty the packet goes
 * on untouched (XDP_PASS; TC_ACT_UNSPEC, which is also TCX_NEXT).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} kfm_head SEC(".maps");

SEC("xdp")
int kfm_xdp_root(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &kfm_head, 0);
	return XDP_PASS;
}

SEC("tc")
int kfm_tc_root(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &kfm_head, 0);
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
