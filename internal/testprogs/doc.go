// Package testprogs holds BPF programs that exist only for kfm's tests and
// benchmarks, not for the marketplace (those are in examples/programs).
//
// Each X.c in this directory compiles with `make bpf` to the committed X.o;
// the package embeds the objects so that test binaries inside kernel VMs,
// which cannot read the source tree, get them too. Every object has one
// entry function named like the object:
//
//	xdp_pass           returns XDP_PASS, nothing else (per-hop cost)
//	xdp_drop           returns XDP_DROP
//	tc_pass            returns TC_ACT_OK, nothing else
//	xdp_verifier_fail  compiles, but the verifier rejects it
//	tc_verifier_fail   the same for SCHED_CLS
//	xdp_subprog        bpf-to-bpf calls (a global and a static subprogram)
//	                   and three exit instructions in the main function
//	xdp_frags          SEC("xdp.frags"): multi-buffer aware
//	xdp_probe_read     calls bpf_probe_read_kernel (the default capability
//	                   policy refuses it), returns XDP_PASS
//	xdp_buff_len       calls bpf_xdp_get_buff_len (kernel 5.18+), returns
//	                   XDP_PASS (kernel compatibility checks)
package testprogs
