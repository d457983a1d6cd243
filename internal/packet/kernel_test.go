package packet_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/kfm-project/kfm/internal/packet"
	"github.com/kfm-project/kfm/internal/testenv"

	"golang.org/x/sys/unix"
)

// The kernel is the referee for checksums: frames built by Marshal are
// injected through an AF_PACKET socket on the loopback device of a private
// network namespace, and the kernel must deliver the UDP payload, answer the
// echo request and answer the TCP SYN. The same frame with one checksum
// byte flipped, sent first, must be dropped: what arrives first is the
// valid one.
func TestKernelAcceptsFrames(t *testing.T) {
	testenv.RequirePrivileged(t)

	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	// Offsets from the start of the frame.
	const ip4 = packet.EthernetHeaderLen
	const ip6 = packet.EthernetHeaderLen
	const l4v4 = ip4 + packet.IPv4HeaderLen
	const l4v6 = ip6 + packet.IPv6HeaderLen

	tests := []struct {
		name    string
		addr    netip.Addr
		kind    packet.Proto
		ext     []uint8
		corrupt int // offset of a checksum byte to flip in the bad copy
	}{
		{"udp4", v4, packet.ProtoUDP, nil, l4v4 + 6},
		{"udp4 bad IP header checksum", v4, packet.ProtoUDP, nil, ip4 + 10},
		{"udp6", v6, packet.ProtoUDP, nil, l4v6 + 6},
		{"udp6 with extension headers", v6, packet.ProtoUDP, []uint8{packet.IPProtoHopByHop, packet.IPProtoDestOpts}, l4v6 + 16 + 6},
		{"tcp4 syn", v4, packet.ProtoTCPSYN, nil, l4v4 + 16},
		{"tcp6 syn", v6, packet.ProtoTCPSYN, nil, l4v6 + 16},
		{"icmp4 echo", v4, packet.ProtoICMPEchoRequest, nil, l4v4 + 2},
		{"icmp6 echo", v6, packet.ProtoICMPEchoRequest, nil, l4v6 + 2},
		{"icmp6 echo with extension header", v6, packet.ProtoICMPEchoRequest, []uint8{packet.IPProtoDestOpts}, l4v6 + 8 + 2},
	}

	ns := newNetns(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enterNetns(t, ns)
			inject := injector(t)
			send := func(f packet.Frame, corrupt bool) {
				t.Helper()
				f.SrcMAC, f.DstMAC = net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{0, 0, 0, 0, 0, 0} // lo's address
				f.IPv6ExtHeaders = tt.ext
				b := f.MustMarshal()
				if corrupt {
					b[tt.corrupt] ^= 0x5a
				}
				inject(b)
			}
			switch tt.kind {
			case packet.ProtoUDP:
				checkUDP(t, tt.addr, send)
			case packet.ProtoTCPSYN:
				checkTCP(t, tt.addr, send)
			case packet.ProtoICMPEchoRequest:
				checkEcho(t, tt.addr, send)
			}
		})
	}
}

// newNetns creates a private network namespace with its loopback device up
// and returns a file descriptor for it, closed when the test ends; the
// namespace disappears with the last descriptor or socket in it.
func newNetns(t *testing.T) int {
	t.Helper()
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result)
	go func() {
		// The thread stays locked: it exits with this goroutine instead
		// of returning to the scheduler in the new namespace.
		runtime.LockOSThread()
		fd, err := setupNetns()
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return r.fd
}

func setupNetns() (int, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return -1, fmt.Errorf("unshare network namespace: %w", err)
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(sock)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return -1, err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFFLAGS, ifr); err != nil {
		return -1, fmt.Errorf("bring lo up: %w", err)
	}
	// Frames injected on lo come without a route attached, so IPv4 treats
	// them as from the wire: it refuses 127/8 there unless route_localnet
	// is set, and a source address of its own unless accept_local is.
	// (The paths are resolved in the calling thread's namespace.)
	for _, knob := range []string{"route_localnet", "accept_local"} {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/lo/"+knob, []byte("1"), 0); err != nil {
			return -1, err
		}
	}
	return unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// enterNetns moves the calling test goroutine into the namespace ns. Its
// thread stays locked and in ns until the goroutine (the test) ends, when
// the Go runtime discards the thread.
func enterNetns(t *testing.T, ns int) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		t.Fatalf("enter network namespace: %v", err)
	}
}

// injector returns a function that sends raw frames out of lo.
func injector(t *testing.T) func([]byte) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	return func(b []byte) {
		if err := unix.Sendto(fd, b, 0, &unix.SockaddrLinklayer{Ifindex: lo.Index}); err != nil {
			t.Fatalf("inject frame: %v", err)
		}
	}
}

func checkUDP(t *testing.T, addr netip.Addr, send func(packet.Frame, bool)) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	src := netip.AddrPortFrom(addr, 40000)
	send(packet.UDP(src, dst, []byte("corrupted")), true)
	send(packet.UDP(src, dst, []byte("valid")), false)
	send(packet.UDP(src, dst, []byte("sentinel")), false)
	for _, want := range []string{"valid", "sentinel"} {
		buf := make([]byte, 100)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("waiting for the %q datagram: %v", want, err)
		}
		if got := string(buf[:n]); got != want || from != src {
			t.Fatalf("received %q from %v, want %q from %v", got, from, want, src)
		}
	}
}

// rawSocket opens a raw socket for an IP protocol that sees every packet of
// that protocol the kernel receives (IPv4: with the IP header).
func rawSocket(t *testing.T, addr netip.Addr, proto int) int {
	family := unix.AF_INET6
	if addr.Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// nextMatching reads transport headers (IPv4 header stripped) from a raw
// socket until match accepts one.
func nextMatching(t *testing.T, fd int, addr netip.Addr, what string, match func(l4 []byte) bool) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		l4 := buf[:n]
		if addr.Is4() {
			l4 = l4[int(l4[0]&0xf)*4:]
		}
		if match(l4) {
			return l4
		}
	}
}

func checkEcho(t *testing.T, addr netip.Addr, send func(packet.Frame, bool)) {
	proto, replyType := unix.IPPROTO_ICMPV6, uint8(129)
	if addr.Is4() {
		proto, replyType = unix.IPPROTO_ICMP, 0
	}
	fd := rawSocket(t, addr, proto)
	const id = 0x4b46
	send(packet.EchoRequest(addr, addr, id, 1, []byte("corrupted")), true)
	send(packet.EchoRequest(addr, addr, id, 2, []byte("valid")), false)
	send(packet.EchoRequest(addr, addr, id, 3, []byte("sentinel")), false)
	for _, want := range []uint16{2, 3} {
		reply := nextMatching(t, fd, addr, fmt.Sprintf("echo reply %d", want), func(l4 []byte) bool {
			return len(l4) >= 8 && l4[0] == replyType && binary.BigEndian.Uint16(l4[4:]) == id
		})
		if seq := binary.BigEndian.Uint16(reply[6:]); seq != want {
			t.Fatalf("first echo reply has sequence number %d, want %d (a corrupted request was answered)", seq, want)
		}
	}
}

func checkTCP(t *testing.T, addr netip.Addr, send func(packet.Frame, bool)) {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	fd := rawSocket(t, addr, unix.IPPROTO_TCP)
	// Each SYN comes from its own port; SYN-ACKs go back to it.
	send(packet.TCPSYN(netip.AddrPortFrom(addr, 40001), dst), true)
	send(packet.TCPSYN(netip.AddrPortFrom(addr, 40002), dst), false)
	send(packet.TCPSYN(netip.AddrPortFrom(addr, 40003), dst), false)
	for _, want := range []uint16{40002, 40003} {
		synack := nextMatching(t, fd, addr, fmt.Sprintf("SYN-ACK to port %d", want), func(l4 []byte) bool {
			return len(l4) >= 20 && binary.BigEndian.Uint16(l4) == dst.Port() && l4[13] == 0x12
		})
		if port := binary.BigEndian.Uint16(synack[2:]); port != want {
			t.Fatalf("first SYN-ACK goes to port %d, want %d (a corrupted SYN was answered)", port, want)
		}
		if ack := binary.BigEndian.Uint32(synack[8:]); ack != 2 {
			t.Fatalf("SYN-ACK acknowledges %d, want 2 (sequence number 1 + SYN)", ack)
		}
	}
}
