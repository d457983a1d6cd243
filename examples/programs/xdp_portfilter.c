//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * xdp_portfilter: drops TCP and UDP packets to one destination port.
 *
 * IPv4 and IPv6 (walking IPv6 extension headers), behind up to two VLAN tags.
 * Matching packets get XDP_DROP and are counted; everything else, including
 * fragments that carry no transport header, gets XDP_PASS.
 *
 * Params (volatile const, set at install):
 *   port  __u16  destination port to drop, host byte order (default 9,
 *                the discard service)
 * Maps:
 *   drops  PERCPU_ARRAY, 1 entry of struct counter {packets, bytes}: the
 *          packets dropped.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT_HDRS 6
#define IPV4_FRAG_OFFSET 0x1fff
#define IPV6_FRAG_OFFSET 0xfff8

volatile const __u16 port = 9;

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counter);
} drops SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* The first four bytes of both TCP and UDP headers. */
struct l4_ports {
	__be16 source;
	__be16 dest;
};

/* Finds the transport header of an IPv4 packet. Returns its protocol and
 * sets *l4, or returns -1 (truncated, invalid, or a non-first fragment). */
static __always_inline int ipv4_transport(void *pos, void *data_end, void **l4)
{
	struct iphdr *iph = pos;

	if ((void *)(iph + 1) > data_end)
		return -1;
	if (iph->version != 4 || iph->ihl < 5)
		return -1;
	if (iph->frag_off & bpf_htons(IPV4_FRAG_OFFSET))
		return -1;
	*l4 = pos + iph->ihl * 4;
	return iph->protocol;
}

/* The same for IPv6, walking extension headers. */
static __always_inline int ipv6_transport(void *pos, void *data_end, void **l4)
{
	struct ipv6hdr *ip6h = pos;
	struct ipv6_frag_hdr *frag;
	struct ipv6_opt_hdr *opt;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6h + 1) > data_end)
		return -1;
	if (ip6h->version != 6)
		return -1;
	nexthdr = ip6h->nexthdr;
	pos = ip6h + 1;

#pragma unroll
	for (i = 0; i < MAX_IPV6_EXT_HDRS; i++) {
		opt = pos;
		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if ((void *)(opt + 1) > data_end)
				return -1;
			nexthdr = opt->nexthdr;
			pos += (opt->hdrlen + 1) * 8;
			break;
		case IPPROTO_AH:
			if ((void *)(opt + 1) > data_end)
				return -1;
			nexthdr = opt->nexthdr;
			pos += (opt->hdrlen + 2) * 4;
			break;
		case IPPROTO_FRAGMENT:
			frag = pos;
			if ((void *)(frag + 1) > data_end)
				return -1;
			if (frag->frag_off & bpf_htons(IPV6_FRAG_OFFSET))
				return -1;
			nexthdr = frag->nexthdr;
			pos = frag + 1;
			break;
		default:
			*l4 = pos;
			return nexthdr;
		}
	}
	return -1;
}

SEC("xdp")
int xdp_portfilter(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct vlan_hdr *vlan;
	struct l4_ports *ports;
	struct counter *c;
	void *l4 = NULL;
	__u32 key = 0;
	__be16 proto;
	int l4proto, i;

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
		l4proto = ipv4_transport(vlan, data_end, &l4);
	else if (proto == bpf_htons(ETH_P_IPV6))
		l4proto = ipv6_transport(vlan, data_end, &l4);
	else
		return XDP_PASS;
	if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
		return XDP_PASS;

	ports = l4;
	if ((void *)(ports + 1) > data_end)
		return XDP_PASS;
	if (ports->dest != bpf_htons(port))
		return XDP_PASS;

	c = bpf_map_lookup_elem(&drops, &key);
	if (c) {
		c->packets++;
		c->bytes += data_end - data;
	}
	return XDP_DROP;
}

char _license[] SEC("license") = "Dual BSD/GPL";
