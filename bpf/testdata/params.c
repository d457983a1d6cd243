//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * Test object for the bpf package: one parameter of every settable kind,
 * libxdp XDP_RUN_CONFIG metadata for one of two programs, and a map.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <xdp/xdp_helpers.h>

enum mode { MODE_OFF = 0, MODE_ON = 1, MODE_AUTO = 7 };

volatile const __u8 p_u8 = 200;
volatile const __s8 p_s8 = -3;
volatile const __u16 p_u16 = 9;
volatile const __s32 p_s32 = -100000;
volatile const __u32 p_u32 = 100;
volatile const __u64 p_u64 = 1ULL << 40;
volatile const __s64 p_s64 = -(1LL << 40);
volatile const _Bool p_bool = 1;
volatile const enum mode p_mode = MODE_AUTO;
const __u32 not_a_param = 5; /* not volatile: folded by the compiler */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

struct {
	__uint(priority, 20);
	__uint(XDP_PASS, 1);
	__uint(XDP_DROP, 1);
} XDP_RUN_CONFIG(with_config);

SEC("xdp")
int with_config(struct xdp_md *ctx)
{
	__u32 k = p_u32;
	__u64 *v = bpf_map_lookup_elem(&seen, &k);

	if (v)
		return XDP_DROP;
	/* Return a value that depends on every parameter so none is folded. */
	return (p_u8 + p_s8 + p_u16 + p_s32 + p_u64 + p_s64 + p_bool + p_mode + not_a_param) & 3;
}

SEC("xdp")
int without_config(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int tc_prog(struct __sk_buff *skb)
{
	/* Lets a test observe the value a loaded program sees. */
	return p_u16;
}

char _license[] SEC("license") = "Dual BSD/GPL";
