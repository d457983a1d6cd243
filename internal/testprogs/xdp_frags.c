//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * xdp_frags: a multi-buffer aware XDP program (SEC("xdp.frags"), loaded with
 * BPF_F_XDP_HAS_FRAGS). It reads the whole frame length with
 * bpf_xdp_get_buff_len and the frame's last byte with bpf_xdp_load_bytes,
 * which work across fragments, records them, and returns XDP_PASS
 * (XDP_ABORTED if the frame is shorter than an Ethernet header).
 *
 * Maps:
 *   frags_stats  ARRAY, 1 entry of struct frags_stats: packets, bytes (whole
 *                frames), multi_buffer (frames longer than their linear
 *                part, i.e. with fragments), last_byte (of the last frame).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct frags_stats {
	__u64 packets;
	__u64 bytes;
	__u64 multi_buffer;
	__u64 last_byte;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frags_stats);
} frags_stats SEC(".maps");

SEC("xdp.frags")
int xdp_frags(struct xdp_md *ctx)
{
	__u64 linear = ctx->data_end - ctx->data;
	__u64 len = bpf_xdp_get_buff_len(ctx);
	struct frags_stats *s;
	__u32 key = 0;
	__u8 last;

	if (len < ETH_HLEN || len > 0xffff)
		return XDP_ABORTED;
	if (bpf_xdp_load_bytes(ctx, len - 1, &last, sizeof(last)) < 0)
		return XDP_ABORTED;

	s = bpf_map_lookup_elem(&frags_stats, &key);
	if (!s)
		return XDP_ABORTED;
	__sync_fetch_and_add(&s->packets, 1);
	__sync_fetch_and_add(&s->bytes, len);
	if (len > linear)
		__sync_fetch_and_add(&s->multi_buffer, 1);
	s->last_byte = last;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
