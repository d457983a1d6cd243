// Package bpf is kfm's kernel side: it reads eBPF ELF objects and describes
// what they hold (entry functions, maps, parameters, licence, libxdp run
// configuration), sets parameters before load, and names hooks and verdicts.
//
// Parameters are `volatile const` globals of the object (they live in
// .rodata): a marketplace program declares
//
//	volatile const __u32 rate = 100;
//
// and a user sets it at install time with `--param rate=500`; kfm writes the
// value into the object's .rodata before the kernel sees the program, so the
// verifier treats it as a constant.
//
// The backends that turn programs into chains live in subpackages:
// dispatcher (libxdp's multi-program protocol), tailcall and tc. Feature
// probes are in probe.
package bpf
