package metrics_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/metrics"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/promtest"
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
	promQL(t, e, pair.BIf, name, n)
	if n := testutil.CollectAndCount(e, "kfm_chain_info"); n != 1 {
		t.Errorf("%d chains", n)
	}
	out, err = testutil.CollectAndFormat(e, expfmt.TypeTextPlain, "kfm_chain_info")
	if err != nil || !strings.Contains(string(out), `backend="`+name+`"`) {
		t.Errorf("chain info: %s %v", out, err)
	}
}

// promQL serves e on 127.0.0.1, has a real Prometheus scrape it, and asks
// it over the HTTP API (PromQL) what the chain did: the port filter dropped
// exactly n datagrams by its own declared counter and by kfm's verdict
// counter, and the chain runs on backend. In the kernel VMs (KFM_REQUIRE_EXT
// marks them) Prometheus comes from the initramfs (internal/kernelvm copies
// the host's), and its absence is a failure there, not a skip.
func promQL(t *testing.T, e prometheus.Collector, iface, backend string, n int) {
	t.Helper()
	if os.Getenv("KFM_REQUIRE_EXT") == "1" {
		if _, err := exec.LookPath("prometheus"); err != nil {
			t.Fatalf("no prometheus in the kernel VM (internal/kernelvm copies the host's /usr/bin/prometheus: install the prometheus package): %v", err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	prom := promtest.Start(t, ln.Addr().String(), &promtest.Options{ScrapeInterval: 500 * time.Millisecond})
	ctx := context.Background()
	sel := fmt.Sprintf(`interface=%q,hook="xdp"`, iface)
	equals := func(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
	for _, q := range []string{
		fmt.Sprintf(`kfm_chain_info{%s,backend=%q}`, sel, backend),
		fmt.Sprintf(`portfilter_dropped_packets_total{%s,program="portfilter",position="0"}`, sel),
		fmt.Sprintf(`kfm_program_packets_total{%s,program="portfilter",verdict="drop"}`, sel),
		fmt.Sprintf(`kfm_program_packets_total{%s,program="portfilter",verdict="pass"} >= 0`, sel),
	} {
		want := float64(n)
		switch {
		case strings.HasPrefix(q, "kfm_chain_info"):
			want = 1
		case strings.HasSuffix(q, ">= 0"):
			// Passed: the n datagrams to the open port and whatever the
			// kernel sends on its own (neighbour discovery): at least n.
			if _, err := prom.WaitFor(ctx, q, 60*time.Second, func(v float64) bool { return v >= float64(n) }); err != nil {
				t.Errorf("PromQL %s: %v\nprometheus: %s", q, err, prom.Output())
			}
			continue
		}
		if _, err := prom.WaitFor(ctx, q, 60*time.Second, equals(want)); err != nil {
			t.Errorf("PromQL %s: %v\nprometheus: %s", q, err, prom.Output())
		}
	}
}
