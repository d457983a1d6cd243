package bpf

import "github.com/cilium/ebpf"

// ProgramTypeName spells a program type the way bpftool does (xdp,
// sched_cls, ...).
func ProgramTypeName(t ebpf.ProgramType) string { return programTypeName(t) }

// MapTypeName spells a map type the way bpftool does (array, percpu_hash,
// ...).
func MapTypeName(t ebpf.MapType) string { return mapTypeName(t) }

// HooksFor returns the hooks kfm can chain a program of type t on; none for
// types kfm cannot chain.
func HooksFor(t ebpf.ProgramType) []Hook { return hooksFor(t) }
