package programs_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/kfm-project/kfm/internal/packet"
)

var (
	host4a = netip.MustParseAddr("192.0.2.1")
	host4b = netip.MustParseAddr("192.0.2.2")
	host4c = netip.MustParseAddr("192.0.2.3")
	host6a = netip.MustParseAddr("2001:db8::1")
	host6b = netip.MustParseAddr("2001:db8::2")
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func udp4(srcPort, dstPort uint16, payload string) packet.Frame {
	return packet.UDP(ap(host4a, srcPort), ap(host4b, dstPort), []byte(payload))
}

func udp6(srcPort, dstPort uint16, payload string) packet.Frame {
	return packet.UDP(ap(host6a, srcPort), ap(host6b, dstPort), []byte(payload))
}

func withVLANs(f packet.Frame, ids ...uint16) packet.Frame {
	f.VLANs = ids
	return f
}

func withExt(f packet.Frame, ext ...uint8) packet.Frame {
	f.IPv6ExtHeaders = ext
	return f
}

func from(f packet.Frame, src netip.Addr) packet.Frame {
	f.Src = src
	return f
}

func marshal(t *testing.T, f packet.Frame) []byte {
	t.Helper()
	b, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// arpRequest is a frame that is not IP: an ARP request for 192.0.2.2.
func arpRequest() []byte {
	b := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06, // Ethernet
		0, 1, 0x08, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
		0x02, 0, 0, 0, 0, 0x01, 192, 0, 2, 1, // sender
		0, 0, 0, 0, 0, 0, 192, 0, 2, 2, // target
	}
	return b
}

// ipv4Fragment turns an untagged IPv4 frame into a fragment at byte offset
// off (a multiple of 8) with the more-fragments flag set, fixing the IPv4
// header checksum. Everything after the IPv4 header stays as it was: for
// off > 0 the bytes that looked like a transport header are fragment data.
func ipv4Fragment(b []byte, off int) []byte {
	ip := b[packet.EthernetHeaderLen : packet.EthernetHeaderLen+packet.IPv4HeaderLen]
	binary.BigEndian.PutUint16(ip[6:], 0x2000|uint16(off/8)) // MF
	ip[10], ip[11] = 0, 0
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	return b
}

// ipv6Fragment builds an untagged IPv6 frame of f with a fragment header
// (offset off, a multiple of 8, more fragments) between the IPv6 and the
// transport header. The transport checksum is left as computed for the
// unfragmented packet: the programs under test do not check it.
func ipv6Fragment(t *testing.T, f packet.Frame, off int) []byte {
	t.Helper()
	f.IPv6ExtHeaders = []uint8{packet.IPProtoDestOpts} // 8 bytes, rewritten below
	b := marshal(t, f)
	ip := b[packet.EthernetHeaderLen:]
	ip[6] = 44 // next header: fragment
	frag := ip[packet.IPv6HeaderLen : packet.IPv6HeaderLen+8]
	frag[1] = 0
	binary.BigEndian.PutUint16(frag[2:], uint16(off)|1) // offset (in 8-byte units << 3) and M
	binary.BigEndian.PutUint32(frag[4:], 0x4b464d)      // identification
	return b
}

// truncate cuts a frame to n bytes.
func truncate(b []byte, n int) []byte { return b[:n] }
