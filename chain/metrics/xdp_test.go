package metrics_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/metrics"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// nsSource reads the chains of a network namespace (interfaces are looked
// up in the calling thread's namespace).
type nsSource struct {
	ns *netns.Namespace
	m  *chain.Manager
}

func (s nsSource) Snapshot(ctx context.Context) (*chain.Snapshot, error) {
	var snap *chain.Snapshot
	err := s.ns.Do(func() error {
		var err error
		snap, err = s.m.Snapshot(ctx)
		return err
	})
	return snap, err
}

// TestXDPChainMetrics: the exporter reads the declared metrics of programs
// chained by the dispatcher (freplace components: in the kernel VMs; the
// host refuses EXT) and by tail calls: the port filter dropped exactly the
// N datagrams sent to its port, the counter after it counted the N it
// passed, and the chain reports its backend.
func TestXDPChainMetrics(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend chain.Backend
	}{
		{"dispatcher", dispatcher.New(nil)},
		{"tailcall", tailcall.New()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "dispatcher" {
				testenv.RequireEXT(t)
			}
			testXDPChainMetrics(t, tc.name, tc.backend)
		})
	}
}

func testXDPChainMetrics(t *testing.T, name string, backend chain.Backend) {
	ctx := context.Background()
	pair := netns.NewPair(t)
	m, err := chain.New(chain.Options{
		BPFFS: testenv.BPFFS(t), StateDir: t.TempDir(), ConfigDir: t.TempDir(),
		Backends: []chain.Backend{backend},
	})
	if err != nil {
		t.Fatal(err)
	}
	prio := func(n int) *int { return &n }
	err = pair.B.Do(func() error {
		if _, err := m.Install(ctx, chain.InstallRequest{Interface: pair.BIf, Backend: name, Mode: "skb", Name: "portfilter",
			Source: "../../examples/programs/xdp_portfilter.o", Priority: prio(20), Params: map[string]string{"port": "7777"}}); err != nil {
			return err
		}
		_, err := m.Install(ctx, chain.InstallRequest{Interface: pair.BIf, Backend: name, Mode: "skb", Name: "count",
			Source: "../../examples/programs/xdp_count.o", Priority: prio(30)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	const n = 30
	rx := netns.Listen(t, pair.B, pair.BAddr, 7778)
	tx := netns.NewSender(t, pair.A)
	for _, port := range []uint16{7777, 7778} {
		if _, err := tx.Send(netip.AddrPortFrom(pair.BAddr, port), n, []byte("kfm-metrics")); err != nil {
			t.Fatal(err)
		}
	}
	if got := rx.WaitFor(n, 10*time.Second); got != n {
		t.Fatalf("received %d of %d on the open port", got, n)
	}

	e := metrics.New(nsSource{pair.B, m}, nil)
	want := fmt.Sprintf(`
# HELP kfm_chain_programs Programs in a chain.
# TYPE kfm_chain_programs gauge
kfm_chain_programs{hook="xdp",interface=%[1]q,netns=""} 2
# HELP portfilter_dropped_packets_total Packets dropped because of their destination port.
# TYPE portfilter_dropped_packets_total counter
portfilter_dropped_packets_total{digest="",hook="xdp",interface=%[1]q,netns="",position="0",program="portfilter"} %[2]d
`, pair.BIf, n)
	if err := testutil.CollectAndCompare(e, strings.NewReader(want), "portfilter_dropped_packets_total", "kfm_chain_programs"); err != nil {
		t.Error(err)
	}
	// The counter also sees what the kernel sends on its own (ICMPv6 of
	// neighbour discovery, proto 58): only UDP (17) is compared.
	out, err := testutil.CollectAndFormat(e, expfmt.TypeTextPlain, "count_packets_total")
	udp := fmt.Sprintf(`count_packets_total{digest="",hook="xdp",interface=%q,netns="",position="1",program="count",proto="17"} %d`, pair.BIf, n)
	if err != nil || !strings.Contains(string(out), udp+"\n") {
		t.Errorf("want %s in:\n%s (%v)", udp, out, err)
	}
	// kfm's own verdict counter of the filter (injected at load, on this
	// backend too) counts the same drops.
	out, err = testutil.CollectAndFormat(e, expfmt.TypeTextPlain, "kfm_program_packets_total")
	drops := fmt.Sprintf(`kfm_program_packets_total{digest="",hook="xdp",interface=%q,netns="",position="0",program="portfilter",verdict="drop"} %d`, pair.BIf, n)
	if err != nil || !strings.Contains(string(out), drops+"\n") {
		t.Errorf("want %s in:\n%s (%v)", drops, out, err)
	}
	if n := testutil.CollectAndCount(e, "kfm_chain_info"); n != 1 {
		t.Errorf("%d chains", n)
	}
	out, err = testutil.CollectAndFormat(e, expfmt.TypeTextPlain, "kfm_chain_info")
	if err != nil || !strings.Contains(string(out), `backend="`+name+`"`) {
		t.Errorf("chain info: %s %v", out, err)
	}
}
