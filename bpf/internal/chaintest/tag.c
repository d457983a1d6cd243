//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * Test programs for kfm's chain backends. None of them knows it runs in a
 * chain: kfm's rewriter adds the chaining.
 *
 * xdp_tag and tc_tag look at IPv4/UDP packets to port `port` (0: any port)
 * whose payload starts with TRACE_LEN bytes: they write their `tag` into the
 * first zero byte of that trace (so the receiver reads the order in which the
 * programs ran), count the packet in `count` (state that must survive chain
 * changes), and return `verdict`. Other packets pass untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define TRACE_LEN 16

volatile const __u8 tag = 'x';
volatile const __u32 verdict = 0xffffffff; /* replaced per program type below */
volatile const __u16 port = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} count SEC(".maps");

/* handle returns 1 when the packet is a test packet (and tags it). */
static __always_inline int handle(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u8 *trace;
	__u32 zero = 0;
	__u64 *c;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return 0;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return 0;
	if (port && udp->dest != bpf_htons(port))
		return 0;
	trace = (void *)(udp + 1);
	if ((void *)(trace + TRACE_LEN) <= data_end) {
#pragma unroll
		for (int i = 0; i < TRACE_LEN; i++) {
			if (trace[i] == 0) {
				trace[i] = tag;
				udp->check = 0;
				break;
			}
		}
	}
	c = bpf_map_lookup_elem(&count, &zero);
	if (c)
		__sync_fetch_and_add(c, 1);
	return 1;
}

SEC("xdp")
int xdp_tag(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (!handle(data, data_end))
		return XDP_PASS;
	return verdict == 0xffffffff ? XDP_PASS : verdict;
}

SEC("tc")
int tc_tag(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (!handle(data, data_end))
		return TC_ACT_OK;
	return verdict == 0xffffffff ? TC_ACT_OK : (int)verdict;
}

/*
 * tc_scribble is tc_tag for a program that uses skb->cb[] for itself (as
 * programs that hand state to their own tail calls do): it clears every cb
 * word first, kfm's gate word cb[4] included.
 */
SEC("tc")
int tc_scribble(struct __sk_buff *skb)
{
	void *data, *data_end;

	skb->cb[0] = 0;
	skb->cb[1] = 0;
	skb->cb[2] = 0;
	skb->cb[3] = 0;
	skb->cb[4] = 0;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (!handle(data, data_end))
		return TC_ACT_OK;
	return verdict == 0xffffffff ? TC_ACT_OK : (int)verdict;
}

char _license[] SEC("license") = "GPL";
