//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tc_count: per-CPU packet and byte counter for a TC hook (ingress or
 * egress, cls_bpf direct-action or TCX).
 *
 * Counts every packet and its length (skb->len) and lets it continue
 * (TC_ACT_OK).
 *
 * Params: none.
 * Maps:
 *   totals  PERCPU_ARRAY, 1 entry of struct counter {packets, bytes}.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counter);
} totals SEC(".maps");

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	struct counter *c;
	__u32 key = 0;

	c = bpf_map_lookup_elem(&totals, &key);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual BSD/GPL";
