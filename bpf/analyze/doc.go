// Package analyze computes what a BPF program does from its instructions:
// its program type and the hooks it fits, the helpers and kfuncs it calls,
// the map types it uses, whether it may write or adjust the packet, write
// packet metadata, redirect or tail-call, what verdicts it returns, and its
// instruction counts ([Capabilities]).
//
// kfm decides on these facts (capability policy, `kfm inspect`) and always
// computes them itself from the object that will load; the copy a bundle
// carries is for display only.
//
// # The analysis
//
// A forward data-flow analysis runs over the main function and every
// subprogram (context-insensitive: a subprogram's entry joins all its call
// sites, and every call site sees the join of its return values). Each
// register and each 8-byte stack slot at a constant offset from r10 holds an
// abstract value: a set of up to eight constants, a number, the context
// pointer, a packet pointer (loaded from the data or data_meta field of
// struct xdp_md or struct __sk_buff, and anything added to it), data_end, a
// stack pointer, a pointer that is never the packet (map values, maps,
// globals, the caller's stack), or "anything".
//
// It is conservative: what it cannot follow counts as "may".
//   - A store through a packet pointer, or through a value the analysis
//     cannot trace, may write the packet.
//   - A helper that writes through a pointer argument (bpf_skb_load_bytes'
//     buffer, bpf_fib_lookup's params...) may write the packet when that
//     argument may be a packet pointer; a helper newer than the tables here,
//     or a kfunc, may write through any argument.
//   - bpf_tail_call runs code kfm cannot see: it counts as writing,
//     adjusting, redirecting and writing metadata.
//   - A helper or call that may write the caller's stack forgets every
//     stack slot.
//   - An instruction stream the analysis cannot follow (a jump out of its
//     function, an unknown opcode, too many steps) makes every fact "may",
//     with the reason in Capabilities.Why.
//
// The read-only observer proof ([Capabilities.ReadOnlyObserver]) holds when
// nothing writes, adjusts, redirects or tail-calls, and r0 is a known
// constant at every exit of the main function, each one "pass" (XDP_PASS;
// TC_ACT_OK or -1 for tc programs). Returning XDP_REDIRECT or
// TC_ACT_REDIRECT counts as redirecting; a verdict computed at run time is
// not proven.
//
// Kernel facts the analysis relies on: the verifier refuses a dereference
// of a number, so only pointers can be written through; the only packet
// pointers a program gets come from the context's data fields, from
// dynptr slices (kfuncs, which count as "anything") and from bpf_dynptr_data
// (which counts as "anything").
package analyze
