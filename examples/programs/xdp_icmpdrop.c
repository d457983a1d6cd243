//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * xdp_icmpdrop: drops ICMP and ICMPv6 echo requests ("ping").
 *
 * Echo requests get XDP_DROP and are counted; everything else, including
 * echo replies and fragments without an ICMP header, gets XDP_PASS. IPv6
 * extension headers are not walked: an echo request behind one passes.
 *
 * The object carries libxdp's XDP_RUN_CONFIG metadata with deliberately
 * non-default values (libxdp's defaults: priority 50, chain call on XDP_PASS
 * only), so that tools can show they read it:
 *   priority 20           runs before programs of default priority;
 *   chain call actions    XDP_PASS and XDP_DROP: in a libxdp chain the next
 *                         program still runs after a drop, and the last
 *                         program's verdict wins. Install with proceed-on
 *                         XDP_PASS alone to make the drop final.
 *
 * Params: none.
 * Maps:
 *   dropped  PERCPU_ARRAY, 1 entry of struct counter {packets, bytes}: the
 *            echo requests dropped.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <xdp/xdp_helpers.h>

#define MAX_VLAN_TAGS 2
#define IPV4_FRAG_OFFSET 0x1fff
#define ICMP_ECHO_REQUEST 8     /* RFC 792 */
#define ICMPV6_ECHO_REQUEST 128 /* RFC 4443 */

struct {
	__uint(priority, 20);
	__uint(XDP_PASS, 1);
	__uint(XDP_DROP, 1);
} XDP_RUN_CONFIG(xdp_icmpdrop);

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counter);
} dropped SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* The start of an ICMP or ICMPv6 echo message. (linux/icmp.h is not usable
 * here: it includes libc headers.) */
struct icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

/* Returns 1 if the IPv4 packet at pos is an ICMP echo request. */
static __always_inline int ipv4_echo_request(void *pos, void *data_end)
{
	struct iphdr *iph = pos;
	struct icmp_echo *icmph;

	if ((void *)(iph + 1) > data_end)
		return 0;
	if (iph->version != 4 || iph->ihl < 5 || iph->protocol != IPPROTO_ICMP)
		return 0;
	if (iph->frag_off & bpf_htons(IPV4_FRAG_OFFSET))
		return 0;
	icmph = pos + iph->ihl * 4;
	if ((void *)(icmph + 1) > data_end)
		return 0;
	return icmph->type == ICMP_ECHO_REQUEST;
}

/* Returns 1 if the IPv6 packet at pos is an ICMPv6 echo request. */
static __always_inline int ipv6_echo_request(void *pos, void *data_end)
{
	struct ipv6hdr *ip6h = pos;
	struct icmp_echo *icmp6h;

	if ((void *)(ip6h + 1) > data_end)
		return 0;
	if (ip6h->version != 6 || ip6h->nexthdr != IPPROTO_ICMPV6)
		return 0;
	icmp6h = (void *)(ip6h + 1);
	if ((void *)(icmp6h + 1) > data_end)
		return 0;
	return icmp6h->type == ICMPV6_ECHO_REQUEST;
}

SEC("xdp")
int xdp_icmpdrop(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct vlan_hdr *vlan;
	struct counter *c;
	__u32 key = 0;
	__be16 proto;
	int echo, i;

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

	if (proto == bpf_htons(ETH_P_IP))
		echo = ipv4_echo_request(vlan, data_end);
	else if (proto == bpf_htons(ETH_P_IPV6))
		echo = ipv6_echo_request(vlan, data_end);
	else
		return XDP_PASS;
	if (!echo)
		return XDP_PASS;

	c = bpf_map_lookup_elem(&dropped, &key);
	if (c) {
		c->packets++;
		c->bytes += data_end - data;
	}
	return XDP_DROP;
}

char _license[] SEC("license") = "Dual BSD/GPL";
