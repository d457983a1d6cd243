// Package xdp attaches programs to the XDP hook of a network interface the
// way libxdp does: through netlink (never a bpf_link, which other tools
// could not replace), atomically replacing an expected program with
// XDP_FLAGS_REPLACE and IFLA_XDP_EXPECTED_FD.
//
// All functions act on the interface index in the network namespace of the
// calling OS thread; callers that switch namespaces lock the thread.
package xdp
