//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * tc_verifier_fail: compiles, but the kernel verifier rejects it. It reads
 * the first byte of the packet without checking it against data_end
 * ("invalid access to packet").
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int tc_verifier_fail(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;

	if (data[0] == 0xff)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
