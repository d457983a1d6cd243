// Package programs holds the sample marketplace programs: independent eBPF
// programs as a kernel-function marketplace would ship them, none with any
// chaining code (no PROG_ARRAY, no bpf_tail_call). kfm chains them.
//
// Each X.c in this directory compiles with `make bpf` to the committed X.o,
// built with BTF. The package embeds the objects so that tests anywhere in
// the module, and test binaries inside kernel VMs that cannot read the
// source tree, get them without a path:
//
//	xdp_count       per-CPU packet/byte counters by L4 protocol; XDP_PASS
//	xdp_ratelimit   token bucket per source IPv4 address (params rate, burst)
//	xdp_portfilter  drops TCP/UDP to one destination port (param port)
//	xdp_icmpdrop    drops ICMP echo requests; carries libxdp XDP_RUN_CONFIG
//	                metadata (priority 20, chain call on XDP_PASS and XDP_DROP)
//	tc_count        per-CPU packet/byte counter for TC hooks; TC_ACT_OK
//	tc_mark         sets skb->mark from a parameter (param mark); TC_ACT_OK
//
// Every object has one entry function named like the object. The comment at
// the top of each C file describes its parameters and maps.
package programs
