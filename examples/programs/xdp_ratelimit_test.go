package programs_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/internal/packet"
)

// ratelimitStats mirrors struct ratelimit_stats.
type ratelimitStats struct {
	Passed  uint64
	Dropped uint64
}

// bucket mirrors struct bucket.
type bucket struct {
	Tokens uint64 // 1e-9 packets
	LastNs uint64
}

func readRatelimitStats(t *testing.T, m *ebpf.Map) ratelimitStats {
	t.Helper()
	var perCPU []ratelimitStats
	if err := m.Lookup(uint32(0), &perCPU); err != nil {
		t.Fatal(err)
	}
	var sum ratelimitStats
	for _, s := range perCPU {
		sum.Passed += s.Passed
		sum.Dropped += s.Dropped
	}
	return sum
}

// burstFrom sends n+1 frames from src and returns the verdicts and how long
// the burst took.
func burstFrom(t *testing.T, prog *ebpf.Program, src netip.Addr, n int) ([]uint32, time.Duration) {
	t.Helper()
	frame := marshal(t, from(udp4(1000, 2000, "burst"), src))
	start := time.Now()
	verdicts := make([]uint32, n+1)
	for i := range verdicts {
		verdicts[i] = run(t, prog, frame)
	}
	return verdicts, time.Since(start)
}

// With rate 1/s and burst 5, a source passes exactly 5 packets of a quick
// burst and loses the 6th, while another source still passes and non-IPv4
// traffic is never limited.
func TestXDPRateLimitBurst(t *testing.T) {
	const burst = 5
	coll := load(t, "xdp_ratelimit", map[string]any{"rate": uint32(1), "burst": uint32(burst)})
	prog, stats, buckets := coll.Programs["xdp_ratelimit"], coll.Maps["stats"], coll.Maps["buckets"]

	// A token comes back every second: the burst must be over before
	// that for the count to be exact. A burst takes microseconds; if this
	// machine stalled for a second, try again with a fresh source.
	var want ratelimitStats
	var src netip.Addr
	for attempt := 0; ; attempt++ {
		src = netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + attempt)})
		before := readRatelimitStats(t, stats)
		verdicts, took := burstFrom(t, prog, src, burst)
		if took >= time.Second {
			if attempt == 2 {
				t.Fatalf("three bursts of %d packets took a second or more each: machine too slow for this test", burst+1)
			}
			t.Logf("burst from %v took %v; trying again", src, took)
			continue
		}
		for i, v := range verdicts {
			wantV := uint32(xdpPass)
			if i == burst {
				wantV = xdpDrop
			}
			if v != wantV {
				t.Fatalf("packet %d of the burst from %v: %s, want %s (verdicts %v)", i+1, src, verdictName(v), verdictName(wantV), verdicts)
			}
		}
		want = ratelimitStats{Passed: before.Passed + burst, Dropped: before.Dropped + 1}
		break
	}

	var b bucket
	if err := buckets.Lookup(src.As4(), &b); err != nil {
		t.Fatalf("no bucket for %v: %v", src, err)
	}
	if b.Tokens >= 1e9 {
		t.Errorf("bucket of %v holds %d/1e9 tokens after a drop, want less than one token", src, b.Tokens)
	}

	if v := run(t, prog, marshal(t, from(udp4(1, 2, "other"), host4c))); v != xdpPass {
		t.Errorf("first packet from another source: %s, want XDP_PASS", verdictName(v))
	}
	want.Passed++
	for i := range 3 * burst {
		if v := run(t, prog, marshal(t, udp6(1, 2, "v6"))); v != xdpPass {
			t.Fatalf("IPv6 packet %d: %s, want XDP_PASS (only IPv4 is limited)", i+1, verdictName(v))
		}
	}
	if v := run(t, prog, arpRequest()); v != xdpPass {
		t.Errorf("ARP: %s, want XDP_PASS", verdictName(v))
	}

	if got := readRatelimitStats(t, stats); got != want {
		t.Errorf("stats = %+v, want %+v (IPv4 decisions only)", got, want)
	}
}

// An empty bucket fills again at the configured rate.
func TestXDPRateLimitRefill(t *testing.T) {
	coll := load(t, "xdp_ratelimit", map[string]any{"rate": uint32(100), "burst": uint32(1)})
	prog := coll.Programs["xdp_ratelimit"]
	var frame []byte

	// At 100/s a token takes 10ms: two packets well within that get one
	// pass and one drop.
	for attempt := 0; ; attempt++ {
		src := netip.AddrFrom4([4]byte{10, 1, 0, byte(attempt)})
		f := marshal(t, from(withVLANs(udp4(1, 2, "tagged"), 7), src))
		start := time.Now()
		first, second := run(t, prog, f), run(t, prog, f)
		if time.Since(start) >= 5*time.Millisecond {
			if attempt == 5 {
				t.Fatal("two packets never came within 5ms of each other: machine too slow for this test")
			}
			continue
		}
		if first != xdpPass || second != xdpDrop {
			t.Fatalf("two packets from %v in quick succession: %s, %s; want XDP_PASS, XDP_DROP", src, verdictName(first), verdictName(second))
		}
		frame = f
		break
	}
	// 30ms is three tokens' worth; the bucket holds one.
	time.Sleep(30 * time.Millisecond)
	if v := run(t, prog, frame); v != xdpPass {
		t.Fatalf("after 30ms at 100 packets/s: %s, want XDP_PASS", verdictName(v))
	}
}

// With the default parameters (rate 1000/s, burst 100) a source passes 100
// packets at once and loses the 101st.
func TestXDPRateLimitDefaults(t *testing.T) {
	coll := load(t, "xdp_ratelimit", nil)
	prog := coll.Programs["xdp_ratelimit"]
	// A token comes back every millisecond; 101 runs take a few hundred
	// microseconds. (Not one call with Repeat: for repeated XDP runs the
	// kernel switches its XDP dispatcher, which waits for an RCU grace
	// period.) If the machine stalls, retry with a fresh source.
	for attempt := range 10 {
		src := netip.AddrFrom4([4]byte{10, 2, 0, byte(attempt)})
		verdicts, took := burstFrom(t, prog, src, 100)
		if took >= time.Millisecond {
			t.Logf("attempt %d: the burst took %v; trying again", attempt, took)
			continue
		}
		for i, v := range verdicts {
			want := uint32(xdpPass)
			if i == 100 {
				want = xdpDrop
			}
			if v != want {
				t.Fatalf("packet %d of the burst: %s, want %s", i+1, verdictName(v), verdictName(want))
			}
		}
		return
	}
	t.Fatal("101 packets never ran within 1ms: machine too slow for this test")
}

func TestXDPRateLimitParams(t *testing.T) {
	for _, tt := range []struct {
		name   string
		params map[string]any
		passes int // of 20 packets from one source sent at once
	}{
		// burst 0 admits nothing.
		{name: "burst 0", params: map[string]any{"burst": uint32(0)}, passes: 0},
		// rate 0 never refills: exactly the burst passes, whatever the timing.
		{name: "rate 0", params: map[string]any{"rate": uint32(0), "burst": uint32(7)}, passes: 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll := load(t, "xdp_ratelimit", tt.params)
			prog := coll.Programs["xdp_ratelimit"]
			frame := marshal(t, udp4(1, 2, "x"))
			passes := 0
			for range 20 {
				if run(t, prog, frame) == xdpPass {
					passes++
				}
			}
			if passes != tt.passes {
				t.Errorf("%d of 20 packets passed, want %d", passes, tt.passes)
			}
		})
	}
}

func TestXDPRateLimitNonIPv4(t *testing.T) {
	coll := load(t, "xdp_ratelimit", map[string]any{"burst": uint32(0)})
	prog := coll.Programs["xdp_ratelimit"]
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"ipv6", marshal(t, udp6(1, 2, "x"))},
		{"icmpv6", marshal(t, packet.EchoRequest(host6a, host6b, 1, 1, nil))},
		{"arp", arpRequest()},
		{"truncated ipv4", truncate(marshal(t, udp4(1, 2, "")), packet.EthernetHeaderLen+19)},
		{"ethernet header only", truncate(marshal(t, udp4(1, 2, "")), packet.EthernetHeaderLen)},
	} {
		if v := run(t, prog, c.frame); v != xdpPass {
			t.Errorf("%s with burst 0: %s, want XDP_PASS", c.name, verdictName(v))
		}
	}
	// The same limiter does drop IPv4, also behind VLAN tags.
	for _, f := range []packet.Frame{udp4(1, 2, "x"), withVLANs(udp4(1, 2, "x"), 1, 2)} {
		if v := run(t, prog, marshal(t, f)); v != xdpDrop {
			t.Errorf("IPv4 (VLANs %v) with burst 0: %s, want XDP_DROP", f.VLANs, verdictName(v))
		}
	}
}
