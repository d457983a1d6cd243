package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Receiver counts UDP datagrams that reach a port in a namespace, and,
// when it was opened by ListenTraces, counts them by trace too.
type Receiver struct {
	conn     *net.UDPConn
	traceLen int
	count    atomic.Uint64
	mu       sync.Mutex
	traces   map[string]uint64
	done     chan struct{}
}

// Listen opens a UDP socket on addr:port inside ns and counts what arrives
// until the test ends.
func Listen(t TB, ns *Namespace, addr netip.Addr, port int) *Receiver {
	t.Helper()
	return listen(t, ns, addr, port, 0)
}

// ListenTraces is Listen that also counts the datagrams by their trace:
// the first traceLen bytes of the payload without the NULs that end them,
// where kfm's test programs write which programs of a chain ran (the
// trace of a shorter datagram is "").
func ListenTraces(t TB, ns *Namespace, addr netip.Addr, port, traceLen int) *Receiver {
	t.Helper()
	return listen(t, ns, addr, port, traceLen)
}

func listen(t TB, ns *Namespace, addr netip.Addr, port, traceLen int) *Receiver {
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
	r := &Receiver{conn: conn, traceLen: traceLen, traces: map[string]uint64{}, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if r.traceLen > 0 {
				trace := ""
				if n >= r.traceLen {
					trace = string(bytes.TrimRight(buf[:r.traceLen], "\x00"))
				}
				r.mu.Lock()
				r.traces[trace]++
				r.mu.Unlock()
			}
			r.count.Add(1)
		}
	}()
	t.Cleanup(func() { conn.Close(); <-r.done })
	return r
}

// Traces returns how many datagrams arrived with each trace (empty unless
// the receiver was opened by ListenTraces).
func (r *Receiver) Traces() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.traces)
}

// Reset forgets what arrived so far.
func (r *Receiver) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.traces = map[string]uint64{}
	r.count.Store(0)
}

// UDPSocketDrops is ns's count of UDP datagrams dropped because a socket's
// receive queue was full (UdpRcvbufErrors of /proc/net/snmp): packets the
// hook passed but a reader was too slow for.
func UDPSocketDrops(ns *Namespace) (uint64, error) {
	var n uint64
	err := ns.Do(func() error {
		data, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Udp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == "RcvbufErrors" && i < len(f) {
					n, err = strconv.ParseUint(f[i], 10, 64)
					return err
				}
			}
		}
		return errors.New("no Udp RcvbufErrors in /proc/net/snmp")
	})
	return n, err
}

// Flood sends datagrams from a namespace, batch to each destination in turn
// per millisecond (about 1000 batches a second, fewer on a busy machine),
// from one unconnected socket: about ten times what a Stream reaches, to
// have packets in flight at every moment of a chain change.
type Flood struct {
	sent []atomic.Uint64 // per destination
	wg   sync.WaitGroup
	err  error
}

// StartFlood floods dsts with payload from ns until ctx ends; the test's
// end waits for it.
func StartFlood(t TB, ctx context.Context, ns *Namespace, dsts []netip.AddrPort, batch int, payload []byte) *Flood {
	t.Helper()
	var conn *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		t.Fatalf("flood from %s: %v", ns.Name, err)
	}
	f := &Flood{sent: make([]atomic.Uint64, len(dsts))}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer conn.Close()
		to := make([]*net.UDPAddr, len(dsts))
		for i, d := range dsts {
			to[i] = net.UDPAddrFromAddrPort(d)
		}
		for ctx.Err() == nil {
			for range batch {
				for i, addr := range to {
					if _, err := conn.WriteToUDP(payload, addr); err != nil {
						f.err = err
						return
					}
					f.sent[i].Add(1)
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(f.wg.Wait)
	return f
}

// Wait waits for the flood to stop and returns how many datagrams it sent
// to each destination.
func (f *Flood) Wait() ([]uint64, error) {
	f.wg.Wait()
	out := make([]uint64, len(f.sent))
	for i := range f.sent {
		out[i] = f.sent[i].Load()
	}
	return out, f.err
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
