// Package compat checks, before anything loads, whether the running kernel
// can run a program: its program type and every helper it calls (cilium/ebpf
// feature probes), kernel BTF when the program needs it (kfuncs, CO-RE
// relocations), and the minimum kernel its publisher declared. A program
// that would fail is refused with a message naming what is missing instead
// of a verifier log.
//
// The facts are computed from the instructions that will load (never from
// what a bundle says); the publisher's minimum kernel can only refuse, never
// admit, a program. Probe results are cached by cilium/ebpf for the life of
// the process. A probe that cannot decide (EPERM in a sandbox, a program
// type cilium/ebpf cannot probe) does not refuse: the verifier still has
// the last word.
package compat
