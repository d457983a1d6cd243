//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark programs: each does `reps` units of work (an increment of a
 * per-CPU counter) and passes the packet. A chain of N programs with reps=1
 * does the same work as one program with reps=N; the difference is the cost
 * of chaining.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 reps = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} work SEC(".maps");

static __always_inline void do_work(void)
{
	for (__u32 i = 0; i < 16; i++) {
		__u64 *c;

		if (i >= reps)
			break;
		c = bpf_map_lookup_elem(&work, &i);
		if (c)
			*c += 1;
	}
}

SEC("xdp")
int xdp_bench(struct xdp_md *ctx)
{
	do_work();
	return XDP_PASS;
}

SEC("tc")
int tc_bench(struct __sk_buff *skb)
{
	do_work();
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
