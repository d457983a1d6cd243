//go:build ignore

/* Test object for the bpf package: a program without a license section. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int no_license(struct xdp_md *ctx)
{
	return XDP_PASS;
}
