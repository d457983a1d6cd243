// Package netns gives privileged tests a private network: two network
// namespaces joined by a veth pair, with addresses, static neighbours (no
// ARP, so programs that drop everything do not starve the link) and helpers
// to send UDP from one side and count what arrives on the other.
//
// Namespaces are named /run/netns/kfm-<random> so that `ip netns exec` and
// `xdp-loader` can reach them, and every namespace, link and socket is
// removed in t.Cleanup, also when the test fails. Addresses come from
// 198.18.0.0/15, the range RFC 2544 reserves for benchmark networks, and
// never leave the namespaces.
//
// The receiving side B is where chains are installed: run kfm code there
// with B.Do, which locks the goroutine's OS thread and switches it into the
// namespace, because XDP and TCX attach resolve the interface index in the
// calling thread's namespace.
package netns
