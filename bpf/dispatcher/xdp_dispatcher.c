//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/*
 * kfm's XDP dispatcher: an implementation of the multi-program dispatcher of
 * libxdp's protocol (xdp-tools, lib/libxdp/protocol.org), version 2.
 *
 * xdp_dispatcher calls the slot functions prog0, prog1, ... in turn and goes
 * on to the next slot while the verdict of the current one is set in that
 * slot's chain_call_actions bitmap; otherwise it returns the verdict. After
 * the last enabled slot it returns XDP_PASS. kfm (or libxdp) replaces each
 * enabled slot with a component program through freplace (BPF_PROG_TYPE_EXT).
 *
 * The configuration lives in .rodata, which the loader fills in before the
 * program is loaded; the kernel freezes the map, so the verifier knows
 * num_progs_enabled and drops the calls of the disabled slots.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define DISPATCHER_MAGIC 236	/* 'X' + 'D' + 'P' */
#define DISPATCHER_VERSION 2
#define DISPATCHER_RETVAL 31	/* what an empty slot returns: bit 31 */
#define DISPATCHER_SLOTS 10

/* Layout of version 2: 124 bytes. */
struct xdp_dispatcher_config {
	__u8 magic;
	__u8 dispatcher_version;
	__u8 num_progs_enabled;
	__u8 is_xdp_frags;
	__u32 chain_call_actions[DISPATCHER_SLOTS];
	__u32 run_prios[DISPATCHER_SLOTS];
	__u32 program_flags[DISPATCHER_SLOTS];
};

/*
 * const puts the configuration in .rodata (a frozen, read-only map once
 * loaded, whose values the verifier may use); volatile keeps the compiler
 * from folding the compiled-in value (an empty configuration) into the code.
 */
static volatile const struct xdp_dispatcher_config config = {
	.magic = DISPATCHER_MAGIC,
	.dispatcher_version = DISPATCHER_VERSION,
};

/*
 * A slot. Global (so that freplace may target it by its BTF name) and never
 * inlined. It returns DISPATCHER_RETVAL, whose bit is set in every slot's
 * chain_call_actions, so an empty slot lets the packet go on.
 *
 * The bpf_xdp_adjust_tail() call marks the slot as a function that may change
 * packet data: since Linux 6.13 the verifier refuses to let a program that
 * changes packet data (bpf_xdp_adjust_head, _tail, _meta...) replace a
 * function that does not. The call sits behind a condition that never holds
 * at run time (data_end is never below data) but that the verifier cannot
 * decide, so both paths are checked, and an empty slot costs no helper call
 * (enabled slots are replaced before a dispatcher is attached, but the
 * benchmark runs empty slots).
 *
 * The empty asm hides the constant from the compiler, so that the caller
 * cannot assume what a slot returns once it is replaced.
 */
#define SLOT(n)								\
__attribute__((noinline)) int prog##n(struct xdp_md *ctx)		\
{									\
	int ret = DISPATCHER_RETVAL;					\
									\
	if (ctx->data_end < ctx->data)					\
		bpf_xdp_adjust_tail(ctx, 0);				\
	asm volatile("" : "+r"(ret));					\
	return ret;							\
}

SLOT(0)
SLOT(1)
SLOT(2)
SLOT(3)
SLOT(4)
SLOT(5)
SLOT(6)
SLOT(7)
SLOT(8)
SLOT(9)

/*
 * Run slot n if it is enabled; return its verdict unless it may go on.
 *
 * The asm gives each "slot disabled" exit a block of its own (the compiler
 * would merge them all into one): when slot n is enabled, its exit block is
 * dead, so the verifier, which knows num_progs_enabled, removes the check
 * and the block, and an enabled slot costs only the call and the
 * chain-call test.
 */
#define RUN(n)								\
	if (enabled <= n) {						\
		asm volatile("/* slot " #n " disabled */");		\
		return XDP_PASS;					\
	}								\
	ret = prog##n(ctx);						\
	if (!((1U << ret) & cfg->chain_call_actions[n]))		\
		return ret;

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	volatile const struct xdp_dispatcher_config *cfg = &config;
	__u8 enabled;
	__u32 ret;

	/* Keep the configuration's address in a register across the slot
	 * calls instead of loading it again for every slot. */
	asm volatile("" : "+r"(cfg));
	enabled = cfg->num_progs_enabled;
	RUN(0)
	RUN(1)
	RUN(2)
	RUN(3)
	RUN(4)
	RUN(5)
	RUN(6)
	RUN(7)
	RUN(8)
	RUN(9)
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
