package programs_test

import (
	"testing"

	"github.com/kfm-project/kfm/internal/packet"
)

func TestXDPCount(t *testing.T) {
	coll := load(t, "xdp_count", nil)
	prog, counters, nonIP := coll.Programs["xdp_count"], coll.Maps["counters"], coll.Maps["non_ip"]

	icmp4 := packet.EchoRequest(host4a, host4b, 1, 1, []byte("ping"))
	icmp6 := packet.EchoRequest(host6a, host6b, 1, 1, nil)
	cases := []struct {
		name  string
		frame []byte
		times int
		proto int // -1: counted in non_ip
	}{
		{"udp4", marshal(t, udp4(1000, 53, "query")), 3, 17},
		{"udp6", marshal(t, udp6(1000, 53, "a longer query")), 2, 17},
		{"tcp4 syn", marshal(t, packet.TCPSYN(ap(host4a, 40000), ap(host4b, 443))), 5, 6},
		{"tcp6 syn", marshal(t, packet.TCPSYN(ap(host6a, 40000), ap(host6b, 443))), 1, 6},
		{"icmp4 echo", marshal(t, icmp4), 4, 1},
		{"icmpv6 echo", marshal(t, icmp6), 7, 58},
		{"udp4 behind two vlans", marshal(t, withVLANs(udp4(1, 2, "x"), 10, 20)), 2, 17},
		{"icmpv6 behind extension headers", marshal(t, withExt(icmp6, packet.IPProtoHopByHop, packet.IPProtoDestOpts)), 3, 58},
		{"udp6 first fragment", ipv6Fragment(t, udp6(1, 2, "frag"), 0), 1, 17},
		{"arp", arpRequest(), 6, -1},
		{"truncated ipv4", truncate(marshal(t, udp4(1, 2, "")), packet.EthernetHeaderLen+10), 2, -1},
		{"truncated ipv6 extension header", truncate(marshal(t, withExt(udp6(1, 2, ""), packet.IPProtoDestOpts)), packet.EthernetHeaderLen+packet.IPv6HeaderLen+1), 1, -1},
	}

	want := make(map[int]*counter)
	for _, c := range cases {
		if v := runN(t, prog, c.frame, c.times); v != xdpPass {
			t.Errorf("%s: verdict %s, want XDP_PASS", c.name, verdictName(v))
		}
		if want[c.proto] == nil {
			want[c.proto] = &counter{}
		}
		want[c.proto].add(c.frame, c.times)
	}

	for proto := range 256 {
		w := want[proto]
		if w == nil {
			w = &counter{}
		}
		if got := perCPUCounter(t, counters, uint32(proto)); got != *w {
			t.Errorf("counters[%d] = %+v, want %+v", proto, got, *w)
		}
	}
	if got := perCPUCounter(t, nonIP, 0); got != *want[-1] {
		t.Errorf("non_ip = %+v, want %+v", got, *want[-1])
	}
}
