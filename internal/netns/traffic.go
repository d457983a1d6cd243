package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Receiver counts UDP datagrams that reach a port in a namespace.
type Receiver struct {
	conn  *net.UDPConn
	count atomic.Uint64
	done  chan struct{}
}

// Listen opens a UDP socket on addr:port inside ns and counts what arrives
// until the test ends.
func Listen(t TB, ns *Namespace, addr netip.Addr, port int) *Receiver {
	t.Helper()
	var conn *net.UDPConn
	err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		if err != nil {
			return err
		}
		return DeepQueue(conn)
	})
	if err != nil {
		t.Fatalf("listen on %s:%d in %s: %v", addr, port, ns.Name, err)
	}
	r := &Receiver{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := conn.ReadFromUDP(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			r.count.Add(1)
		}
	}()
	t.Cleanup(func() { conn.Close(); <-r.done })
	return r
}

// DeepQueue gives conn a receive queue of 32 MiB, so that a reader that
// falls behind for a while (a VM under TCG while the verifier runs) does not
// make the socket drop datagrams the programs under test passed: a test
// counts at the socket what the chain let through.
func DeepQueue(conn *net.UDPConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("receive queue: %w", serr)
	}
	return nil
}

// Count is the number of datagrams received so far.
func (r *Receiver) Count() uint64 { return r.count.Load() }

// WaitFor waits until at least n datagrams have arrived or timeout passes,
// and returns the count. Use it to let in-flight packets land, not to
// measure speed.
func (r *Receiver) WaitFor(n uint64, timeout time.Duration) uint64 {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c := r.Count(); c >= n {
			return c
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r.Count()
}

// Sender sends UDP datagrams from a namespace through an unconnected
// socket (a connected one stops after an ICMP port unreachable).
type Sender struct {
	conn *net.UDPConn
}

// NewSender opens an unconnected UDP socket inside ns, closed when the test
// ends.
func NewSender(t TB, ns *Namespace) *Sender {
	t.Helper()
	var conn *net.UDPConn
	err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", nil)
		return err
	})
	if err != nil {
		t.Fatalf("open sender in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Sender{conn: conn}
}

// Send sends n datagrams of payload to dst and returns how many the socket
// accepted.
func (s *Sender) Send(dst netip.AddrPort, n int, payload []byte) (int, error) {
	to := net.UDPAddrFromAddrPort(dst)
	for i := 0; i < n; i++ {
		if _, err := s.conn.WriteToUDP(payload, to); err != nil {
			return i, fmt.Errorf("send datagram %d to %s: %w", i, dst, err)
		}
	}
	return n, nil
}

// Stream sends datagrams to dst at about rate per second until ctx ends,
// then reports how many were sent. It is for steady background traffic
// while a test changes a chain.
type Stream struct {
	sent atomic.Uint64
	wg   sync.WaitGroup
	err  error
}

// StartStream starts sending from s to dst at about rate datagrams per
// second until ctx is cancelled; Wait returns the total sent.
func (s *Sender) StartStream(ctx context.Context, dst netip.AddrPort, rate int) *Stream {
	st := &Stream{}
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		to := net.UDPAddrFromAddrPort(dst)
		interval := time.Second / time.Duration(rate)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		payload := []byte("kfm-stream")
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := s.conn.WriteToUDP(payload, to); err != nil {
					st.err = err
					return
				}
				st.sent.Add(1)
			}
		}
	}()
	return st
}

// Wait waits for the stream to stop and returns how many datagrams it sent.
func (st *Stream) Wait() (uint64, error) {
	st.wg.Wait()
	return st.sent.Load(), st.err
}
