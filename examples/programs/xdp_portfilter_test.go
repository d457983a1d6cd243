package programs_test

import (
	"testing"

	"github.com/kfm-project/kfm/internal/packet"
)

func TestXDPPortFilter(t *testing.T) {
	tcp4 := func(dport uint16) packet.Frame { return packet.TCPSYN(ap(host4a, 40000), ap(host4b, dport)) }
	tcp6 := func(dport uint16) packet.Frame { return packet.TCPSYN(ap(host6a, 40000), ap(host6b, dport)) }
	type frameCase struct {
		name  string
		frame []byte
		drop  bool
	}
	// cases returns frames aimed at port p (dropped) and around it.
	cases := func(p uint16) []frameCase {
		other := p + 1
		return []frameCase{
			{"udp4 to port", marshal(t, udp4(1000, p, "x")), true},
			{"udp6 to port", marshal(t, udp6(1000, p, "x")), true},
			{"tcp4 syn to port", marshal(t, tcp4(p)), true},
			{"tcp6 syn to port", marshal(t, tcp6(p)), true},
			{"udp4 to port behind a vlan", marshal(t, withVLANs(udp4(1000, p, "x"), 5)), true},
			{"tcp6 to port behind two vlans", marshal(t, withVLANs(tcp6(p), 5, 6)), true},
			{"udp6 to port behind extension headers", marshal(t, withExt(udp6(1000, p, "x"), packet.IPProtoHopByHop, packet.IPProtoDestOpts)), true},
			{"udp4 first fragment to port", ipv4Fragment(marshal(t, udp4(1000, p, "x")), 0), true},
			{"udp6 first fragment to port", ipv6Fragment(t, udp6(1000, p, "x"), 0), true},

			{"udp4 to another port", marshal(t, udp4(1000, other, "x")), false},
			{"udp4 from port", marshal(t, udp4(p, other, "x")), false},
			{"tcp6 to another port", marshal(t, tcp6(other)), false},
			{"icmp4 echo", marshal(t, packet.EchoRequest(host4a, host4b, p, p, nil)), false},
			{"icmpv6 echo", marshal(t, packet.EchoRequest(host6a, host6b, p, p, nil)), false},
			{"udp4 later fragment", ipv4Fragment(marshal(t, udp4(1000, p, "x")), 8), false},
			{"udp6 later fragment", ipv6Fragment(t, udp6(1000, p, "x"), 8), false},
			{"udp4 truncated to 3 bytes of ports", truncate(marshal(t, udp4(1000, p, "x")), packet.EthernetHeaderLen+packet.IPv4HeaderLen+3), false},
			{"arp", arpRequest(), false},
		}
	}

	for _, tt := range []struct {
		name   string
		params map[string]any
		port   uint16
	}{
		{"default port 9", nil, 9},
		{"port 53", map[string]any{"port": uint16(53)}, 53},
		{"port 65535", map[string]any{"port": uint16(65535)}, 65535},
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll := load(t, "xdp_portfilter", tt.params)
			prog, drops := coll.Programs["xdp_portfilter"], coll.Maps["drops"]
			var want counter
			for _, c := range cases(tt.port) {
				wantV := uint32(xdpPass)
				if c.drop {
					wantV = xdpDrop
					want.add(c.frame, 2)
				}
				if v := runN(t, prog, c.frame, 2); v != wantV {
					t.Errorf("%s: %s, want %s", c.name, verdictName(v), verdictName(wantV))
				}
			}
			if got := perCPUCounter(t, drops, 0); got != want {
				t.Errorf("drops = %+v, want %+v", got, want)
			}
		})
	}
}
