//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * xdp_count: per-CPU packet and byte counters by L4 protocol.
 *
 * Every frame is counted once and passed on (always XDP_PASS).
 *
 * Params: none.
 * Maps:
 *   counters  PERCPU_ARRAY, 256 entries of struct counter {packets, bytes},
 *             indexed by the IPv4 protocol or the IPv6 upper-layer next
 *             header (after hop-by-hop, routing, destination-options,
 *             fragment and AH extension headers).
 *   non_ip    PERCPU_ARRAY, 1 entry of struct counter: frames that are not
 *             IPv4/IPv6, and IP frames too short or malformed to parse.
 * Bytes are frame lengths from the Ethernet header on. Up to two VLAN tags
 * (802.1Q, 802.1ad) are skipped.
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

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counter);
} non_ip SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* IPv6 fragment header (RFC 8200, section 4.5). */
struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* Skips the Ethernet header and up to MAX_VLAN_TAGS VLAN tags. Returns the
 * EtherType of the payload in network byte order and advances *pos past the
 * headers, or returns 0 if the frame is truncated. */
static __always_inline __be16 parse_ethernet(void **pos, void *data_end)
{
	struct ethhdr *eth = *pos;
	struct vlan_hdr *vlan;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return 0;
	proto = eth->h_proto;
	vlan = (void *)(eth + 1);

#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end)
			return 0;
		proto = vlan->encapsulated_proto;
		vlan++;
	}
	*pos = vlan;
	return proto;
}

/* Returns the IPv4 protocol, or -1 if the header is truncated or invalid. */
static __always_inline int parse_ipv4(void *pos, void *data_end)
{
	struct iphdr *iph = pos;

	if ((void *)(iph + 1) > data_end)
		return -1;
	if (iph->version != 4 || iph->ihl < 5)
		return -1;
	if (pos + iph->ihl * 4 > data_end)
		return -1;
	return iph->protocol;
}

/* Returns the upper-layer protocol of an IPv6 packet, walking its extension
 * headers, or -1 if a header is truncated or there are too many. */
static __always_inline int parse_ipv6(void *pos, void *data_end)
{
	struct ipv6hdr *ip6h = pos;
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
			if (pos + sizeof(struct ipv6_frag_hdr) > data_end)
				return -1;
			nexthdr = opt->nexthdr;
			pos += sizeof(struct ipv6_frag_hdr);
			break;
		default:
			return nexthdr;
		}
	}
	return -1;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	void *pos = data;
	struct counter *c;
	__u32 key = 0;
	int proto = -1;
	__be16 eth_proto;

	eth_proto = parse_ethernet(&pos, data_end);
	if (eth_proto == bpf_htons(ETH_P_IP))
		proto = parse_ipv4(pos, data_end);
	else if (eth_proto == bpf_htons(ETH_P_IPV6))
		proto = parse_ipv6(pos, data_end);

	if (proto < 0) {
		c = bpf_map_lookup_elem(&non_ip, &key);
	} else {
		key = proto;
		c = bpf_map_lookup_elem(&counters, &key);
	}
	if (!c)
		return XDP_PASS;
	c->packets++;
	c->bytes += data_end - data;
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
