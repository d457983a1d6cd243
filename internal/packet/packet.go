package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Proto is what a frame carries above IP.
type Proto uint8

// The transports Marshal can build.
const (
	ProtoUDP             Proto = iota + 1 // UDP datagram with Payload
	ProtoTCPSYN                           // TCP segment with only SYN set, an MSS option and Payload
	ProtoICMPEchoRequest                  // ICMP (IPv4) or ICMPv6 (IPv6) echo request with Payload
	ProtoICMPEchoReply                    // ICMP or ICMPv6 echo reply with Payload
)

func (p Proto) String() string {
	switch p {
	case ProtoUDP:
		return "UDP"
	case ProtoTCPSYN:
		return "TCP SYN"
	case ProtoICMPEchoRequest:
		return "ICMP echo request"
	case ProtoICMPEchoReply:
		return "ICMP echo reply"
	}
	return fmt.Sprintf("Proto(%d)", uint8(p))
}

// EtherTypes, IP protocol numbers and header sizes, as they appear in frames.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeIPv6 = 0x86dd
	EtherTypeVLAN = 0x8100 // 802.1Q

	IPProtoHopByHop = 0
	IPProtoICMP     = 1
	IPProtoTCP      = 6
	IPProtoUDP      = 17
	IPProtoICMPv6   = 58
	IPProtoDestOpts = 60

	EthernetHeaderLen = 14
	VLANTagLen        = 4
	IPv4HeaderLen     = 20
	IPv6HeaderLen     = 40
	IPv6ExtHeaderLen  = 8 // each extension header Marshal writes
	UDPHeaderLen      = 8
	TCPSYNHeaderLen   = 24 // 20 bytes + the MSS option
	ICMPEchoHeaderLen = 8

	// DefaultTTL is the IPv4 TTL or IPv6 hop limit when Frame.TTL is 0.
	DefaultTTL = 64
	// MSS is the maximum segment size a TCP SYN announces.
	MSS = 1460
)

// Default MAC addresses, locally administered, used when Frame.SrcMAC or
// Frame.DstMAC is nil.
var (
	DefaultSrcMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	DefaultDstMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

// ErrInvalid is wrapped by every error Marshal returns: the Frame cannot be
// built as described.
var ErrInvalid = errors.New("invalid frame")

// Frame describes an Ethernet frame carrying one IPv4 or IPv6 packet.
type Frame struct {
	// SrcMAC and DstMAC are 6-byte MAC addresses; nil means DefaultSrcMAC
	// and DefaultDstMAC.
	SrcMAC, DstMAC net.HardwareAddr
	// VLANs are 802.1Q VLAN IDs (0..4095), outermost first; each becomes a
	// tag with EtherType 0x8100 and priority 0.
	VLANs []uint16

	// Src and Dst are both IPv4 or both IPv6 addresses (IPv4-mapped IPv6
	// addresses count as IPv4).
	Src, Dst netip.Addr
	// TTL is the IPv4 TTL or IPv6 hop limit; 0 means DefaultTTL.
	TTL uint8
	// IPv6ExtHeaders are extension headers placed, in this order, between
	// the IPv6 header and the transport header: IPProtoHopByHop (first
	// only) or IPProtoDestOpts, each 8 bytes holding a PadN option. IPv6 only.
	IPv6ExtHeaders []uint8

	Proto Proto
	// SrcPort and DstPort are the UDP or TCP ports.
	SrcPort, DstPort uint16
	// TCPSeq is the sequence number of a TCP SYN.
	TCPSeq uint32
	// ICMPID and ICMPSeq are the identifier and sequence number of an echo
	// request or reply.
	ICMPID, ICMPSeq uint16
	// Payload follows the transport header.
	Payload []byte
}

// UDP describes a UDP datagram from src to dst carrying payload.
func UDP(src, dst netip.AddrPort, payload []byte) Frame {
	return Frame{Src: src.Addr(), Dst: dst.Addr(), SrcPort: src.Port(), DstPort: dst.Port(), Proto: ProtoUDP, Payload: payload}
}

// TCPSYN describes the first segment of a TCP handshake from src to dst.
func TCPSYN(src, dst netip.AddrPort) Frame {
	return Frame{Src: src.Addr(), Dst: dst.Addr(), SrcPort: src.Port(), DstPort: dst.Port(), Proto: ProtoTCPSYN, TCPSeq: 1}
}

// EchoRequest describes an ICMP (or, for IPv6 addresses, ICMPv6) echo
// request ("ping") from src to dst.
func EchoRequest(src, dst netip.Addr, id, seq uint16, payload []byte) Frame {
	return Frame{Src: src, Dst: dst, Proto: ProtoICMPEchoRequest, ICMPID: id, ICMPSeq: seq, Payload: payload}
}

// EchoReply describes an ICMP or ICMPv6 echo reply from src to dst.
func EchoReply(src, dst netip.Addr, id, seq uint16, payload []byte) Frame {
	f := EchoRequest(src, dst, id, seq, payload)
	f.Proto = ProtoICMPEchoReply
	return f
}

// MustMarshal is Marshal for frames known to be valid; it panics on error.
func (f Frame) MustMarshal() []byte {
	b, err := f.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// Marshal builds the frame: Ethernet header, VLAN tags, IP header (and IPv6
// extension headers), transport header and payload, with all lengths and
// checksums set. It fails, wrapping ErrInvalid, if the description is
// incomplete or inconsistent.
func (f Frame) Marshal() ([]byte, error) {
	srcMAC, dstMAC := orDefault(f.SrcMAC, DefaultSrcMAC), orDefault(f.DstMAC, DefaultDstMAC)
	if len(srcMAC) != 6 || len(dstMAC) != 6 {
		return nil, fmt.Errorf("%w: MAC addresses must have 6 bytes (source %v, destination %v)", ErrInvalid, srcMAC, dstMAC)
	}
	for _, id := range f.VLANs {
		if id > 0xfff {
			return nil, fmt.Errorf("%w: VLAN ID %d is above 4095", ErrInvalid, id)
		}
	}
	if !f.Src.IsValid() || !f.Dst.IsValid() {
		return nil, fmt.Errorf("%w: source and destination IP addresses are required (have %v and %v)", ErrInvalid, f.Src, f.Dst)
	}
	src, dst := f.Src.Unmap(), f.Dst.Unmap()
	if src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("%w: source %v and destination %v are not of the same IP version", ErrInvalid, f.Src, f.Dst)
	}
	ipv6 := src.Is6()
	if !ipv6 && len(f.IPv6ExtHeaders) > 0 {
		return nil, fmt.Errorf("%w: IPv6 extension headers in an IPv4 packet", ErrInvalid)
	}
	for i, h := range f.IPv6ExtHeaders {
		if h != IPProtoDestOpts && !(h == IPProtoHopByHop && i == 0) {
			return nil, fmt.Errorf("%w: IPv6 extension header %d at position %d: only hop-by-hop (0, first) and destination options (60) are supported", ErrInvalid, h, i)
		}
	}

	l4, ipProto, err := f.transport(ipv6)
	if err != nil {
		return nil, err
	}
	extLen := len(f.IPv6ExtHeaders) * IPv6ExtHeaderLen
	ipLen := IPv4HeaderLen
	if ipv6 {
		ipLen = IPv6HeaderLen + extLen
	}
	if ipv6 && extLen+len(l4) > 0xffff || !ipv6 && ipLen+len(l4) > 0xffff {
		return nil, fmt.Errorf("%w: %d bytes of %v payload do not fit in one IP packet", ErrInvalid, len(f.Payload), f.Proto)
	}

	b := make([]byte, 0, EthernetHeaderLen+VLANTagLen*len(f.VLANs)+ipLen+len(l4))
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	for _, id := range f.VLANs {
		b = binary.BigEndian.AppendUint16(b, EtherTypeVLAN)
		b = binary.BigEndian.AppendUint16(b, id)
	}
	if ipv6 {
		b = binary.BigEndian.AppendUint16(b, EtherTypeIPv6)
		b = f.appendIPv6(b, src, dst, ipProto, extLen+len(l4))
	} else {
		b = binary.BigEndian.AppendUint16(b, EtherTypeIPv4)
		b = f.appendIPv4(b, src, dst, ipProto, ipLen+len(l4))
	}

	// The transport checksum covers a pseudo header (not for ICMP over IPv4).
	var sum uint32
	if ipv6 || ipProto != IPProtoICMP {
		sum = pseudoHeaderSum(src, dst, ipProto, len(l4))
	}
	csum := checksum(sum, l4)
	off := checksumOffset(ipProto)
	if ipProto == IPProtoUDP && csum == 0 {
		csum = 0xffff // 0 means "no checksum" in UDP (RFC 768)
	}
	binary.BigEndian.PutUint16(l4[off:], csum)
	return append(b, l4...), nil
}

// transport builds the transport header and payload with a zero checksum.
func (f Frame) transport(ipv6 bool) (l4 []byte, ipProto uint8, err error) {
	switch f.Proto {
	case ProtoUDP:
		if UDPHeaderLen+len(f.Payload) > 0xffff {
			return nil, 0, fmt.Errorf("%w: %d bytes of payload do not fit in a UDP datagram", ErrInvalid, len(f.Payload))
		}
		l4 = make([]byte, UDPHeaderLen, UDPHeaderLen+len(f.Payload))
		binary.BigEndian.PutUint16(l4[0:], f.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], f.DstPort)
		binary.BigEndian.PutUint16(l4[4:], uint16(UDPHeaderLen+len(f.Payload)))
		return append(l4, f.Payload...), IPProtoUDP, nil
	case ProtoTCPSYN:
		l4 = make([]byte, TCPSYNHeaderLen, TCPSYNHeaderLen+len(f.Payload))
		binary.BigEndian.PutUint16(l4[0:], f.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], f.DstPort)
		binary.BigEndian.PutUint32(l4[4:], f.TCPSeq)
		// acknowledgement number 0
		l4[12] = TCPSYNHeaderLen / 4 << 4 // data offset in 32-bit words
		l4[13] = 0x02                     // SYN
		binary.BigEndian.PutUint16(l4[14:], 64240)
		// checksum and urgent pointer 0; then the MSS option
		l4[20], l4[21] = 2, 4
		binary.BigEndian.PutUint16(l4[22:], MSS)
		return append(l4, f.Payload...), IPProtoTCP, nil
	case ProtoICMPEchoRequest, ProtoICMPEchoReply:
		l4 = make([]byte, ICMPEchoHeaderLen, ICMPEchoHeaderLen+len(f.Payload))
		switch {
		case ipv6 && f.Proto == ProtoICMPEchoRequest:
			l4[0], ipProto = 128, IPProtoICMPv6
		case ipv6:
			l4[0], ipProto = 129, IPProtoICMPv6
		case f.Proto == ProtoICMPEchoRequest:
			l4[0], ipProto = 8, IPProtoICMP
		default:
			l4[0], ipProto = 0, IPProtoICMP
		}
		binary.BigEndian.PutUint16(l4[4:], f.ICMPID)
		binary.BigEndian.PutUint16(l4[6:], f.ICMPSeq)
		return append(l4, f.Payload...), ipProto, nil
	}
	return nil, 0, fmt.Errorf("%w: unknown transport %v (use ProtoUDP, ProtoTCPSYN, ProtoICMPEchoRequest or ProtoICMPEchoReply)", ErrInvalid, f.Proto)
}

func (f Frame) ttl() uint8 {
	if f.TTL == 0 {
		return DefaultTTL
	}
	return f.TTL
}

func (f Frame) appendIPv4(b []byte, src, dst netip.Addr, proto uint8, totalLen int) []byte {
	h := make([]byte, IPv4HeaderLen)
	h[0] = 4<<4 | IPv4HeaderLen/4
	binary.BigEndian.PutUint16(h[2:], uint16(totalLen))
	binary.BigEndian.PutUint16(h[6:], 0x4000) // don't fragment
	h[8] = f.ttl()
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], checksum(0, h))
	return append(b, h...)
}

func (f Frame) appendIPv6(b []byte, src, dst netip.Addr, proto uint8, payloadLen int) []byte {
	h := make([]byte, IPv6HeaderLen)
	h[0] = 6 << 4
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLen))
	h[6] = proto
	if len(f.IPv6ExtHeaders) > 0 {
		h[6] = f.IPv6ExtHeaders[0]
	}
	h[7] = f.ttl()
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	b = append(b, h...)
	for i := range f.IPv6ExtHeaders {
		next := proto
		if i+1 < len(f.IPv6ExtHeaders) {
			next = f.IPv6ExtHeaders[i+1]
		}
		// next header, length 0 (in 8-byte units beyond the first 8),
		// then a PadN option filling the remaining 6 bytes.
		b = append(b, next, 0, 1, 4, 0, 0, 0, 0)
	}
	return b
}

func orDefault(mac, def net.HardwareAddr) net.HardwareAddr {
	if mac == nil {
		return def
	}
	return mac
}

func checksumOffset(ipProto uint8) int {
	switch ipProto {
	case IPProtoUDP:
		return 6
	case IPProtoTCP:
		return 16
	}
	return 2 // ICMP, ICMPv6
}

// pseudoHeaderSum is the unfolded one's complement sum of the IPv4 or IPv6
// pseudo header (RFC 768, RFC 8200 section 8.1).
func pseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	var ph []byte
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		ph = append(append(ph, s[:]...), d[:]...)
		ph = append(ph, 0, proto)
		ph = binary.BigEndian.AppendUint16(ph, uint16(length))
	} else {
		s, d := src.As16(), dst.As16()
		ph = append(append(ph, s[:]...), d[:]...)
		ph = binary.BigEndian.AppendUint32(ph, uint32(length))
		ph = append(ph, 0, 0, 0, proto)
	}
	return sum16(0, ph)
}

// sum16 adds b as big-endian 16-bit words (odd length padded with a zero
// byte) to sum without folding.
func sum16(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

// checksum returns the Internet checksum (RFC 1071) of b, starting from the
// partial sum initial.
func checksum(initial uint32, b []byte) uint16 {
	sum := sum16(initial, b)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
