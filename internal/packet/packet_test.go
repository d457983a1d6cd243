package packet_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/packet"
)

// decoded is what the test reads back from a frame, independently of the
// code that wrote it.
type decoded struct {
	dstMAC, srcMAC   net.HardwareAddr
	vlans            []uint16
	etherType        uint16
	src, dst         netip.Addr
	ttl, ipProto     uint8
	extHeaders       []uint8
	l4               []byte // transport header and payload
	srcPort, dstPort uint16
	payload          []byte
}

// onesSum folds b (big-endian 16-bit words, odd byte padded) into a 16-bit
// one's complement sum, folding after every addition.
func onesSum(sum uint16, b []byte) uint16 {
	for i := 0; i < len(b); i += 2 {
		w := uint16(b[i]) << 8
		if i+1 < len(b) {
			w |= uint16(b[i+1])
		}
		s := uint32(sum) + uint32(w)
		sum = uint16(s) + uint16(s>>16)
	}
	return sum
}

func decode(t *testing.T, b []byte) decoded {
	t.Helper()
	var d decoded
	if len(b) < 14 {
		t.Fatalf("frame of %d bytes is shorter than an Ethernet header", len(b))
	}
	d.dstMAC, d.srcMAC = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	d.etherType = binary.BigEndian.Uint16(b[12:])
	b = b[14:]
	for d.etherType == 0x8100 {
		d.vlans = append(d.vlans, binary.BigEndian.Uint16(b)&0xfff)
		d.etherType = binary.BigEndian.Uint16(b[2:])
		b = b[4:]
	}
	var pseudo []byte
	switch d.etherType {
	case 0x0800:
		ihl := int(b[0]&0xf) * 4
		if b[0]>>4 != 4 || ihl != 20 {
			t.Fatalf("IPv4 version/IHL byte %#x", b[0])
		}
		if total := int(binary.BigEndian.Uint16(b[2:])); total != len(b) {
			t.Fatalf("IPv4 total length %d, packet has %d bytes", total, len(b))
		}
		if s := onesSum(0, b[:ihl]); s != 0xffff {
			t.Fatalf("IPv4 header checksum does not verify (sum %#x)", s)
		}
		d.ttl, d.ipProto = b[8], b[9]
		d.src, _ = netip.AddrFromSlice(b[12:16])
		d.dst, _ = netip.AddrFromSlice(b[16:20])
		d.l4 = b[ihl:]
		pseudo = append(append([]byte{}, b[12:20]...), 0, d.ipProto, byte(len(d.l4)>>8), byte(len(d.l4)))
	case 0x86dd:
		if b[0]>>4 != 6 {
			t.Fatalf("IPv6 version %d", b[0]>>4)
		}
		if pl := int(binary.BigEndian.Uint16(b[4:])); pl != len(b)-40 {
			t.Fatalf("IPv6 payload length %d, packet has %d bytes after the header", pl, len(b)-40)
		}
		d.ttl = b[7]
		d.src, _ = netip.AddrFromSlice(b[8:24])
		d.dst, _ = netip.AddrFromSlice(b[24:40])
		next, rest := b[6], b[40:]
		for next == 0 || next == 60 {
			d.extHeaders = append(d.extHeaders, next)
			n := (int(rest[1]) + 1) * 8
			next, rest = rest[0], rest[n:]
		}
		d.ipProto, d.l4 = next, rest
		l := len(d.l4)
		pseudo = append(append([]byte{}, b[8:40]...), byte(l>>24), byte(l>>16), byte(l>>8), byte(l), 0, 0, 0, d.ipProto)
	default:
		t.Fatalf("EtherType %#x", d.etherType)
	}

	if d.ipProto == 1 {
		pseudo = nil // ICMP for IPv4 has no pseudo header
	}
	if s := onesSum(onesSum(0, pseudo), d.l4); s != 0xffff {
		t.Fatalf("transport (protocol %d) checksum does not verify (sum %#x)", d.ipProto, s)
	}
	switch d.ipProto {
	case 17:
		d.srcPort, d.dstPort = binary.BigEndian.Uint16(d.l4), binary.BigEndian.Uint16(d.l4[2:])
		if ul := int(binary.BigEndian.Uint16(d.l4[4:])); ul != len(d.l4) {
			t.Fatalf("UDP length %d, datagram has %d bytes", ul, len(d.l4))
		}
		d.payload = d.l4[8:]
	case 6:
		d.srcPort, d.dstPort = binary.BigEndian.Uint16(d.l4), binary.BigEndian.Uint16(d.l4[2:])
		d.payload = d.l4[int(d.l4[12]>>4)*4:]
	default:
		d.payload = d.l4[8:]
	}
	return d
}

func TestMarshal(t *testing.T) {
	src4, dst4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	src6, dst6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8:ffff::2")
	mac1 := net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01}
	mac2 := net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02}
	payload := []byte("hello, kfm")
	odd := []byte("odd")

	tests := []struct {
		name      string
		frame     packet.Frame
		ipProto   uint8
		icmpType  uint8 // for ICMP
		tcpFlags  uint8 // for TCP
		wantLen   int
		wantVLANs []uint16
	}{
		{"udp4", packet.UDP(netip.AddrPortFrom(src4, 1234), netip.AddrPortFrom(dst4, 53), payload), 17, 0, 0, 14 + 20 + 8 + len(payload), nil},
		{"udp4 odd payload", packet.UDP(netip.AddrPortFrom(src4, 1), netip.AddrPortFrom(dst4, 2), odd), 17, 0, 0, 14 + 20 + 8 + 3, nil},
		{"udp6", packet.UDP(netip.AddrPortFrom(src6, 5353), netip.AddrPortFrom(dst6, 9), payload), 17, 0, 0, 14 + 40 + 8 + len(payload), nil},
		{"udp6 empty payload", packet.UDP(netip.AddrPortFrom(src6, 5353), netip.AddrPortFrom(dst6, 9), nil), 17, 0, 0, 14 + 40 + 8, nil},
		{"tcp4 syn", packet.TCPSYN(netip.AddrPortFrom(src4, 40000), netip.AddrPortFrom(dst4, 443)), 6, 0, 0x02, 14 + 20 + 24, nil},
		{"tcp6 syn", packet.TCPSYN(netip.AddrPortFrom(src6, 40000), netip.AddrPortFrom(dst6, 80)), 6, 0, 0x02, 14 + 40 + 24, nil},
		{"icmp4 echo request", packet.EchoRequest(src4, dst4, 0x1234, 7, payload), 1, 8, 0, 14 + 20 + 8 + len(payload), nil},
		{"icmp4 echo reply", packet.EchoReply(src4, dst4, 0x1234, 7, odd), 1, 0, 0, 14 + 20 + 8 + 3, nil},
		{"icmp6 echo request", packet.EchoRequest(src6, dst6, 1, 2, payload), 58, 128, 0, 14 + 40 + 8 + len(payload), nil},
		{"icmp6 echo reply", packet.EchoReply(src6, dst6, 1, 2, payload), 58, 129, 0, 14 + 40 + 8 + len(payload), nil},
		{"ipv4-mapped addresses are IPv4", packet.UDP(netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"), netip.MustParseAddrPort("10.0.0.2:2"), payload), 17, 0, 0, 14 + 20 + 8 + len(payload), nil},
		{"two vlans", func() packet.Frame {
			f := packet.UDP(netip.AddrPortFrom(src4, 1), netip.AddrPortFrom(dst4, 2), payload)
			f.VLANs = []uint16{100, 4095}
			return f
		}(), 17, 0, 0, 14 + 8 + 20 + 8 + len(payload), []uint16{100, 4095}},
		{"ipv6 extension headers", func() packet.Frame {
			f := packet.UDP(netip.AddrPortFrom(src6, 1), netip.AddrPortFrom(dst6, 2), payload)
			f.IPv6ExtHeaders = []uint8{packet.IPProtoHopByHop, packet.IPProtoDestOpts}
			return f
		}(), 17, 0, 0, 14 + 40 + 16 + 8 + len(payload), nil},
		{"macs and ttl", func() packet.Frame {
			f := packet.EchoRequest(src6, dst6, 1, 1, nil)
			f.SrcMAC, f.DstMAC, f.TTL = mac1, mac2, 1
			return f
		}(), 58, 128, 0, 14 + 40 + 8, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.frame.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.wantLen {
				t.Fatalf("frame has %d bytes, want %d", len(b), tt.wantLen)
			}
			d := decode(t, b)

			wantSrcMAC, wantDstMAC := tt.frame.SrcMAC, tt.frame.DstMAC
			if wantSrcMAC == nil {
				wantSrcMAC = packet.DefaultSrcMAC
			}
			if wantDstMAC == nil {
				wantDstMAC = packet.DefaultDstMAC
			}
			if !bytes.Equal(d.srcMAC, wantSrcMAC) || !bytes.Equal(d.dstMAC, wantDstMAC) {
				t.Errorf("MACs %v -> %v, want %v -> %v", d.srcMAC, d.dstMAC, wantSrcMAC, wantDstMAC)
			}
			if !slicesEqual(d.vlans, tt.wantVLANs) {
				t.Errorf("VLANs %v, want %v", d.vlans, tt.wantVLANs)
			}
			if d.src != tt.frame.Src.Unmap() || d.dst != tt.frame.Dst.Unmap() {
				t.Errorf("addresses %v -> %v, want %v -> %v", d.src, d.dst, tt.frame.Src, tt.frame.Dst)
			}
			wantTTL := tt.frame.TTL
			if wantTTL == 0 {
				wantTTL = packet.DefaultTTL
			}
			if d.ttl != wantTTL {
				t.Errorf("TTL %d, want %d", d.ttl, wantTTL)
			}
			if d.ipProto != tt.ipProto {
				t.Errorf("IP protocol %d, want %d", d.ipProto, tt.ipProto)
			}
			if !slicesEqual(d.extHeaders, tt.frame.IPv6ExtHeaders) {
				t.Errorf("IPv6 extension headers %v, want %v", d.extHeaders, tt.frame.IPv6ExtHeaders)
			}
			if !bytes.Equal(d.payload, tt.frame.Payload) {
				t.Errorf("payload %q, want %q", d.payload, tt.frame.Payload)
			}
			switch tt.ipProto {
			case 17, 6:
				if d.srcPort != tt.frame.SrcPort || d.dstPort != tt.frame.DstPort {
					t.Errorf("ports %d -> %d, want %d -> %d", d.srcPort, d.dstPort, tt.frame.SrcPort, tt.frame.DstPort)
				}
			}
			if tt.ipProto == 6 {
				if flags := d.l4[13]; flags != tt.tcpFlags {
					t.Errorf("TCP flags %#x, want %#x", flags, tt.tcpFlags)
				}
				if seq := binary.BigEndian.Uint32(d.l4[4:]); seq != tt.frame.TCPSeq {
					t.Errorf("TCP sequence number %d, want %d", seq, tt.frame.TCPSeq)
				}
				if d.l4[20] != 2 || d.l4[21] != 4 || binary.BigEndian.Uint16(d.l4[22:]) != packet.MSS {
					t.Errorf("TCP options % x, want an MSS option of %d", d.l4[20:24], packet.MSS)
				}
			}
			if tt.ipProto == 1 || tt.ipProto == 58 {
				if d.l4[0] != tt.icmpType || d.l4[1] != 0 {
					t.Errorf("ICMP type/code %d/%d, want %d/0", d.l4[0], d.l4[1], tt.icmpType)
				}
				if id, seq := binary.BigEndian.Uint16(d.l4[4:]), binary.BigEndian.Uint16(d.l4[6:]); id != tt.frame.ICMPID || seq != tt.frame.ICMPSeq {
					t.Errorf("ICMP id/seq %d/%d, want %d/%d", id, seq, tt.frame.ICMPID, tt.frame.ICMPSeq)
				}
			}
		})
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A UDP checksum that computes to 0 is sent as 0xffff: 0 means "none".
func TestMarshalUDPZeroChecksum(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2")
	f := packet.UDP(src, dst, []byte{0, 0})
	b := f.MustMarshal()
	// Choose the payload so that the sum of everything else is cancelled.
	csum := binary.BigEndian.Uint16(b[14+20+6:])
	binary.BigEndian.PutUint16(f.Payload, csum)
	b = f.MustMarshal()
	if got := binary.BigEndian.Uint16(b[14+20+6:]); got != 0xffff {
		t.Fatalf("UDP checksum %#04x, want 0xffff for a datagram whose checksum computes to zero", got)
	}
	decode(t, b) // and it still verifies
}

func TestMarshalErrors(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1")
	with := func(f packet.Frame, change func(*packet.Frame)) packet.Frame { change(&f); return f }
	tests := []struct {
		name  string
		frame packet.Frame
		want  string
	}{
		{"no addresses", packet.Frame{Proto: packet.ProtoUDP}, "addresses are required"},
		{"mixed versions", packet.UDP(v4, v6, nil), "same IP version"},
		{"no transport", with(packet.UDP(v4, v4, nil), func(f *packet.Frame) { f.Proto = 0 }), "unknown transport"},
		{"short MAC", with(packet.UDP(v4, v4, nil), func(f *packet.Frame) { f.SrcMAC = net.HardwareAddr{1, 2, 3} }), "6 bytes"},
		{"VLAN ID", with(packet.UDP(v4, v4, nil), func(f *packet.Frame) { f.VLANs = []uint16{4096} }), "VLAN ID 4096"},
		{"UDP too big", packet.UDP(v6, v6, make([]byte, 65535-7)), "UDP datagram"},
		{"IPv4 too big", packet.EchoRequest(v4.Addr(), v4.Addr(), 1, 1, make([]byte, 65535-20-7)), "one IP packet"},
		{"ext headers on IPv4", with(packet.UDP(v4, v4, nil), func(f *packet.Frame) { f.IPv6ExtHeaders = []uint8{60} }), "IPv4 packet"},
		{"hop-by-hop not first", with(packet.UDP(v6, v6, nil), func(f *packet.Frame) { f.IPv6ExtHeaders = []uint8{60, 0} }), "position 1"},
		{"unsupported ext header", with(packet.UDP(v6, v6, nil), func(f *packet.Frame) { f.IPv6ExtHeaders = []uint8{44} }), "extension header 44"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.frame.Marshal()
			if !errors.Is(err, packet.ErrInvalid) {
				t.Fatalf("Marshal() = %d bytes, %v; want an error wrapping ErrInvalid", len(b), err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// The largest frames still build.
func TestMarshalLimits(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1")
	for _, f := range []packet.Frame{
		packet.UDP(v4, v4, make([]byte, 65535-20-8)),
		packet.UDP(v6, v6, make([]byte, 65535-8)),
	} {
		b, err := f.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		decode(t, b)
	}
}
