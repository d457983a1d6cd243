//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * xdp_ratelimit: token-bucket rate limit per source IPv4 address.
 *
 * Each source address gets a bucket of `burst` tokens that refills at `rate`
 * tokens per second; a packet takes one token and is dropped (XDP_DROP) when
 * the bucket is empty. A new source starts with a full bucket. Frames that
 * are not IPv4 (or too short to hold an IPv4 header) pass untouched.
 *
 * Params (volatile const, set at install):
 *   rate   __u32  packets per second per source        (default 1000)
 *   burst  __u32  packets a source may send in a burst (default 100);
 *                 0 drops all IPv4.
 * Maps:
 *   buckets  LRU_HASH, 16384 entries: source address (network byte order)
 *            -> struct bucket {tokens (in 1e-9 packets), last_ns}.
 *   stats    PERCPU_ARRAY, 1 entry of struct ratelimit_stats {passed,
 *            dropped}: IPv4 packets passed and dropped by the limiter.
 *
 * Buckets are updated without locks (which keeps the program loadable on
 * any kernel): when packets of one source reach several CPUs at the same
 * instant, a few of them may pass or be dropped against the exact count.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_VLAN_TAGS 2
#define NSEC_PER_SEC 1000000000ULL

volatile const __u32 rate = 1000;
volatile const __u32 burst = 100;

struct bucket {
	__u64 tokens; /* in units of 1e-9 packets: one packet costs NSEC_PER_SEC */
	__u64 last_ns;
};

struct ratelimit_stats {
	__u64 passed;
	__u64 dropped;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct bucket);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ratelimit_stats);
} stats SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* Returns 1 if a packet from saddr may pass, taking a token, else 0. */
static __always_inline int take_token(__u32 saddr)
{
	__u64 capacity = (__u64)burst * NSEC_PER_SEC;
	__u64 now = bpf_ktime_get_ns();
	__u32 r = rate;
	struct bucket *b, fresh;
	__u64 tokens, elapsed;

	b = bpf_map_lookup_elem(&buckets, &saddr);
	if (!b) {
		if (capacity < NSEC_PER_SEC)
			return 0;
		fresh.tokens = capacity - NSEC_PER_SEC;
		fresh.last_ns = now;
		bpf_map_update_elem(&buckets, &saddr, &fresh, BPF_ANY);
		return 1;
	}

	tokens = b->tokens;
	elapsed = now > b->last_ns ? now - b->last_ns : 0;
	if (r && elapsed) {
		/* Compare before multiplying: elapsed * r cannot overflow below
		 * the time it takes to fill an empty bucket. */
		if (elapsed >= capacity / r)
			tokens = capacity;
		else
			tokens += elapsed * r;
		if (tokens > capacity)
			tokens = capacity;
	}
	b->last_ns = now;
	if (tokens < NSEC_PER_SEC) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - NSEC_PER_SEC;
	return 1;
}

SEC("xdp")
int xdp_ratelimit(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct ratelimit_stats *s;
	struct vlan_hdr *vlan;
	struct iphdr *iph;
	__u32 key = 0;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	proto = eth->h_proto;
	vlan = (void *)(eth + 1);
#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end)
			return XDP_PASS;
		proto = vlan->encapsulated_proto;
		vlan++;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;

	iph = (void *)vlan;
	if ((void *)(iph + 1) > data_end || iph->version != 4)
		return XDP_PASS;

	s = bpf_map_lookup_elem(&stats, &key);
	if (take_token(iph->saddr)) {
		if (s)
			s->passed++;
		return XDP_PASS;
	}
	if (s)
		s->dropped++;
	return XDP_DROP;
}

char _license[] SEC("license") = "Dual BSD/GPL";
