//go:build ignore

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tc_mark: sets the packet mark (skb->mark, the fwmark that ip rules,
 * netfilter and routing match on) of every packet, and lets it continue
 * (TC_ACT_OK).
 *
 * Params (volatile const, set at install):
 *   mark  __u32  the mark to set (default 0x1)
 * Maps: none.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 mark = 0x1;

SEC("tc")
int tc_mark(struct __sk_buff *skb)
{
	skb->mark = mark;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual BSD/GPL";
