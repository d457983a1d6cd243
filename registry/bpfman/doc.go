// Package bpfman reads bpfman's eBPF bytecode images, so that kfm pulls,
// inspects and installs them like its own bundles.
//
// A bytecode image (bpfman.io, "eBPF Bytecode Image Specifications") is an
// ordinary container image: its config carries the labels io.ebpf.programs
// (a JSON object: function name -> program type) and io.ebpf.maps (map name
// -> map type), or, in the older form, io.ebpf.bpf_function_name,
// io.ebpf.program_type and io.ebpf.filename; its single layer is a tar+gzip
// archive with the ELF object at the root.
//
// The layer is outside input and is read with strict limits (see Limits):
// only regular files and directories, no absolute names, no "..", no links or
// devices, a bounded number of entries and bounded sizes, compressed and
// uncompressed. Anything else is refused with an error wrapping ErrUnsafeLayer
// that names the entry.
package bpfman
