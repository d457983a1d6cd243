//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark programs: each does `reps` units of work (an increment of a
 * per-CPU counter) and passes the packet (XDP_PASS; on TC `tc_verdict`,
 * default TC_ACT_OK). A chain of N programs with reps=1 does the same work as
 * one program with reps=N; the difference is the cost of chaining.
 *
 * tc_tstart and tc_tend bracket a TC chain on real packets: tc_tstart (first
 * on the hook) notes the time, tc_tend (last) adds the time since then to a
 * per-CPU sum and counts the packet. Both return TC_ACT_UNSPEC.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 reps = 1;
volatile const __s32 tc_verdict = TC_ACT_OK;

struct timing {
	__u64 start;
	__u64 sum;
	__u64 count;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct timing);
} timing SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} work SEC(".maps");

static __always_inline void do_work(void)
{
#pragma unroll
	for (__u32 i = 0; i < 16; i++) {
		__u32 key = i;
		__u64 *c;

		if (i >= reps)
			break;
		c = bpf_map_lookup_elem(&work, &key);
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
	return tc_verdict;
}

SEC("tc")
int tc_tstart(struct __sk_buff *skb)
{
	__u32 key = 0;
	struct timing *t = bpf_map_lookup_elem(&timing, &key);

	if (t)
		t->start = bpf_ktime_get_ns();
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tc_tend(struct __sk_buff *skb)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 key = 0;
	struct timing *t = bpf_map_lookup_elem(&timing, &key);

	if (t && t->start) {
		t->sum += now - t->start;
		t->count++;
		t->start = 0;
	}
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
