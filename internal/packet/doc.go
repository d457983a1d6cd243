// Package packet crafts Ethernet frames for tests: IPv4 or IPv6 carrying
// UDP, a TCP SYN, or an ICMP/ICMPv6 echo request or reply, optionally behind
// 802.1Q VLAN tags and (IPv6) hop-by-hop and destination-options extension
// headers, with every length and checksum filled in correctly, so that a
// frame built here is accepted by a real network stack.
//
// A Frame describes one frame; the constructors UDP, TCPSYN, EchoRequest and
// EchoReply fill in the common fields, and Marshal produces the bytes:
//
//	f := packet.UDP(netip.MustParseAddrPort("10.0.0.1:1234"), netip.MustParseAddrPort("10.0.0.2:53"), []byte("hi"))
//	f.VLANs = []uint16{100}
//	b, err := f.Marshal()
//
// The package uses only the standard library.
package packet
