package packet_test

import (
	"fmt"
	"net/netip"

	"github.com/kfm-project/kfm/internal/packet"
)

func Example() {
	src := netip.MustParseAddrPort("192.0.2.1:40000")
	dst := netip.MustParseAddrPort("198.51.100.2:53")

	f := packet.UDP(src, dst, []byte("query"))
	f.VLANs = []uint16{100}
	b, err := f.Marshal()
	if err != nil {
		panic(err)
	}
	fmt.Println(len(b), "bytes:", packet.EthernetHeaderLen+packet.VLANTagLen+packet.IPv4HeaderLen+packet.UDPHeaderLen, "of headers")
	fmt.Printf("EtherType after the tag: %#04x\n", uint16(b[16])<<8|uint16(b[17]))

	ping := packet.EchoRequest(netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), 1, 1, nil)
	fmt.Println(len(ping.MustMarshal()), "bytes:", ping.Proto)
	// Output:
	// 51 bytes: 46 of headers
	// EtherType after the tag: 0x0800
	// 62 bytes: ICMP echo request
}
