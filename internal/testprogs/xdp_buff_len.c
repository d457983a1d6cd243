//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * xdp_buff_len: an XDP program (not frags-aware) that needs a helper kernels
 * before 5.18 lack: it records the frame length from bpf_xdp_get_buff_len
 * and returns XDP_PASS. kfm's kernel compatibility check refuses it on 5.10
 * naming the helper, and accepts it on 6.12.
 *
 * Maps:
 *   buff_len  ARRAY, 1 entry of __u64: the length of the last frame.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} buff_len SEC(".maps");

SEC("xdp")
int xdp_buff_len(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&buff_len, &key);

	if (v)
		*v = bpf_xdp_get_buff_len(ctx);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
