package netns

import (
	"os"
	"path/filepath"
)

// DisableIPv6 turns IPv6 off on both ends of the veth pair, so that the
// only packets on the link are the ones a test sends: with IPv4 and the
// static neighbours of NewPair nothing else (no router solicitations,
// duplicate address detection or MLD reports) reaches the programs on it,
// and tests can expect exact packet counts.
func (p *Pair) DisableIPv6(t TB) {
	t.Helper()
	off := func(ns *Namespace, ifname string) {
		// /proc/sys/net is the namespace of the thread that opens it.
		err := ns.Do(func() error {
			return os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6"), []byte("1\n"), 0o644)
		})
		if err != nil {
			t.Fatalf("disable IPv6 on %s in %s: %v", ifname, ns.Name, err)
		}
	}
	off(p.A, p.AIf)
	off(p.B, p.BIf)
}
