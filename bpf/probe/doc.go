// Package probe answers what the running kernel can do for kfm's backends:
// whether it loads and re-attaches freplace (BPF_PROG_TYPE_EXT) programs, as
// the libxdp dispatcher needs, and whether it supports TCX links.
//
// Each probe loads a tiny program and reports nil when the feature works, or
// an error that says what the kernel refused (for example "EXT programs
// refused: operation not permitted"). Probes are cheap but not free; callers
// that need an answer several times keep it in a Prober.
package probe
