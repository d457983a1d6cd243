package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/metrics"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/promtest"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
)

// nsSource reads the chains of a test's network namespace: the exporter
// runs in the test process on 127.0.0.1, the chains in the namespace of
// the managed interface (interfaces are looked up in the calling thread's
// namespace; pinned maps are the same everywhere).
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

// serveMetrics serves the exporter of h's host on 127.0.0.1 and returns
// its address.
func (h *host) serveMetrics() string {
	h.t.Helper()
	m, err := chain.New(chain.Options{BPFFS: h.bpffs, StateDir: h.stateDir, ConfigDir: h.configDir, Backends: backends(h.bpffs)})
	if err != nil {
		h.t.Fatal(err)
	}
	// Applies and reconciles are the agent's to count; one of each is
	// recorded here so that the dashboard's panels of them have series.
	ops := metrics.NewOps()
	ops.ObserveApply(20*time.Millisecond, nil)
	ops.ObserveReconcile("config-dir", 30*time.Millisecond, nil)
	reg := metrics.NewRegistry(metrics.New(nsSource{h.pair.B, m}, nil), ops)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg, nil))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	h.t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// scrape fetches the exporter's text once.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// disableIPv6 stops the kernel of ns from sending IPv6 (router
// solicitations, MLD reports) over ifname, so that a program counting every
// packet sees only the test's datagrams.
func disableIPv6(t *testing.T, ns *netns.Namespace, ifname string) {
	t.Helper()
	err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+ifname+"/disable_ipv6", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func equals(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// TestPrometheusScrapesXDPChain: a real Prometheus scrapes the exporter
// while datagrams cross an XDP chain on the tailcall backend (what auto
// picks on this host): the port filter, installed from the registry with
// its bundle.yaml declarations, dropped exactly the N datagrams sent to its
// port and the counter after it counted exactly the N it passed; the
// chain's backend and lock digest and the ratelimit's LRU map fill are
// there; a removed program's series go stale at the next scrape.
func TestPrometheusScrapesXDPChain(t *testing.T) {
	h := newHost(t)
	digest := h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "", "--bundle", samplesDir+"xdp_portfilter.bundle.yaml")
	h.mustKFM("install", h.reg.Ref("net/portfilter", "1.0.0"), "--iface", h.iface, "--name", "portfilter", "--priority", "20", "--param", "port=7777")
	h.mustKFM("install", samplesDir+"xdp_count.o", "--iface", h.iface, "--name", "count", "--priority", "30")
	// A rate limit no test datagram reaches: its LRU map holds one bucket
	// per source address.
	h.mustKFM("install", samplesDir+"xdp_ratelimit.o", "--iface", h.iface, "--name", "ratelimit", "--priority", "10", "--param", "rate=1000000", "--param", "burst=1000000")

	addr := h.serveMetrics()
	prom := promtest.Start(t, addr, &promtest.Options{ScrapeInterval: 500 * time.Millisecond})
	ctx := context.Background()
	sel := fmt.Sprintf(`interface=%q,hook="xdp"`, h.iface)

	lockBytes, err := os.ReadFile(filepath.Join(h.configDir, "kfm.lock"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lockBytes)
	lockDigest := "sha256:" + hex.EncodeToString(sum[:])
	if _, err := prom.WaitFor(ctx, fmt.Sprintf(`kfm_chain_info{%s,backend="tailcall",lock_digest=%q}`, sel, lockDigest), 30*time.Second, equals(1)); err != nil {
		t.Fatalf("chain info: %v\nscrape:\n%s\nprometheus: %s", err, scrape(t, addr), prom.Output())
	}

	// What passed each program before the traffic, from one scrape that
	// the next agrees with (nothing in flight).
	passQ := fmt.Sprintf(`kfm_program_packets_total{%s,verdict="pass"}`, sel)
	passes := func(q string) (rl, pf, c float64) {
		t.Helper()
		ss, err := prom.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		by := map[string]float64{}
		for _, s := range ss {
			by[s.Labels["program"]] = s.Value
		}
		return by["ratelimit"], by["portfilter"], by["count"]
	}
	if _, err := prom.WaitFor(ctx, fmt.Sprintf(`count(kfm_program_packets_total{%s,verdict="pass"})`, sel), 20*time.Second, equals(3)); err != nil {
		t.Fatalf("pass counters: %v", err)
	}
	rl0, pf0, c0 := passes(passQ)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(time.Second) // two scrapes
		rl1, pf1, c1 := passes(passQ)
		if rl1 == rl0 && pf1 == pf0 && c1 == c0 {
			break
		}
		rl0, pf0, c0 = rl1, pf1, c1
	}

	const n = 40
	got := h.traffic(n, 7777, 7778)
	if got[7777] != 0 || got[7778] != n {
		t.Fatalf("received %v, want 0 on 7777 and %d on 7778", got, n)
	}
	q := fmt.Sprintf(`portfilter_dropped_packets_total{%s,program="portfilter",position="1",digest=%q}`, sel, digest)
	if _, err := prom.WaitFor(ctx, q, 20*time.Second, equals(n)); err != nil {
		t.Errorf("port filter drops: %v", err)
	}
	// The counter runs after the filter: it saw the N that passed (UDP is
	// protocol 17; the label comes from the map's integer key).
	q = fmt.Sprintf(`count_packets_total{%s,program="count",position="2",proto="17"}`, sel)
	if _, err := prom.WaitFor(ctx, q, 20*time.Second, equals(n)); err != nil {
		t.Errorf("counter: %v", err)
	}
	// All 2N reached the rate limiter, first in the chain; it passed them.
	q = fmt.Sprintf(`ratelimit_passed_packets_total{%s,program="ratelimit",position="0"}`, sel)
	if _, err := prom.WaitFor(ctx, q, 20*time.Second, equals(2*n)); err != nil {
		t.Errorf("rate limiter: %v", err)
	}
	// One source address: one bucket of 16384.
	q = fmt.Sprintf(`kfm_map_fill_ratio{%s,program="ratelimit",map="buckets"}`, sel)
	if _, err := prom.WaitFor(ctx, q, 20*time.Second, equals(1.0/16384)); err != nil {
		t.Errorf("map fill: %v", err)
	}
	if _, err := prom.WaitFor(ctx, fmt.Sprintf(`kfm_chain_programs{%s}`, sel), 20*time.Second, equals(3)); err != nil {
		t.Errorf("chain programs: %v", err)
	}
	// kfm's own verdict counters say the same, for every program. The
	// kernel may send a packet of its own on the link (they count every
	// packet, the declared maps above only IPv4 or UDP), so what passed is
	// checked along the chain: the filter saw what the rate limiter
	// passed and dropped exactly the N to its port, the counter saw what
	// the filter passed; nobody else dropped anything.
	verdict := func(program, v string) float64 {
		t.Helper()
		q := fmt.Sprintf(`kfm_program_packets_total{%s,program=%q,verdict=%q}`, sel, program, v)
		got, err := prom.WaitFor(ctx, q, 20*time.Second, func(float64) bool { return true })
		if err != nil || len(got) != 1 {
			t.Fatalf("verdict counter %s: %v %v", q, got, err)
		}
		return got[0].Value
	}
	if _, err := prom.WaitFor(ctx, fmt.Sprintf(`kfm_program_packets_total{%s,program="portfilter",verdict="drop"}`, sel), 20*time.Second, equals(n)); err != nil {
		t.Errorf("port filter's drop counter: %v", err)
	}
	if d := verdict("ratelimit", "drop") + verdict("count", "drop"); d != 0 {
		t.Errorf("rate limiter and counter dropped %v packets, want 0", d)
	}
	// The three pass counts come from one query, so from one scrape: read
	// one at a time, a packet of the kernel's own arriving between two
	// scrapes would count in one and not the other. Such a packet may
	// still arrive while one scrape reads the maps: the next scrape is
	// then consistent again, so the check is retried for a while. They
	// are compared as increments over the traffic (passes0, read before
	// it): a packet of the kernel's that came while the chain was being
	// built crossed the filter before the rate limiter was put ahead of
	// it.
	rlPass, pfPass, cPass := passes(passQ)
	rlPass, pfPass, cPass = rlPass-rl0, pfPass-pf0, cPass-c0
	for deadline := time.Now().Add(20 * time.Second); ; {
		if (rlPass >= 2*n && pfPass == rlPass-n && cPass == pfPass) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
		rlPass, pfPass, cPass = passes(passQ)
		rlPass, pfPass, cPass = rlPass-rl0, pfPass-pf0, cPass-c0
	}
	if rlPass < 2*n || pfPass != rlPass-n || cPass != pfPass {
		t.Errorf("passes along the chain during the traffic: ratelimit %v (want >= %d), portfilter %v (want %v), count %v (want %v)", rlPass, 2*n, pfPass, rlPass-n, cPass, pfPass)
	}
	// Every query of the Grafana dashboard parses in Prometheus and has
	// data (a rate needs two scrapes of a series that appeared with the
	// traffic: queries are retried for a few seconds).
	for _, expr := range dashboardExprs(t) {
		deadline := time.Now().Add(15 * time.Second)
		for {
			ss, err := prom.Query(ctx, expr)
			if err == nil && len(ss) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("dashboard query %s: %d samples, %v", expr, len(ss), err)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	// `kfm metrics --once` (in the namespace) says the same.
	out := h.mustKFM("metrics", "--once")
	for _, want := range []string{
		fmt.Sprintf(`portfilter_dropped_packets_total{digest=%q,hook="xdp",interface=%q,netns="",position="1",program="portfilter"} %d`, digest, h.iface, n),
		fmt.Sprintf(`kfm_chain_info{backend="tailcall",hook="xdp",interface=%q,lock_digest=%q,netns=""} 1`, h.iface, lockDigest),
		fmt.Sprintf(`kfm_program_packets_total{digest=%q,hook="xdp",interface=%q,netns="",position="1",program="portfilter",verdict="drop"} %d`, digest, h.iface, n),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kfm metrics --once lacks %s:\n%s", want, out)
		}
	}

	// Removed: the next scrape has no portfilter series (no stale cache),
	// and the counter moved up one place.
	h.mustKFM("remove", "portfilter", "--iface", h.iface)
	if _, err := prom.WaitFor(ctx, fmt.Sprintf(`absent(portfilter_dropped_packets_total{%s})`, sel), 20*time.Second, equals(1)); err != nil {
		t.Errorf("removed program still exported: %v", err)
	}
	if _, err := prom.WaitFor(ctx, fmt.Sprintf(`count_packets_total{%s,program="count",position="1",proto="17"}`, sel), 20*time.Second, equals(n)); err != nil {
		t.Errorf("counter after the removal: %v", err)
	}
	// Detached by hand (no kfm command: the host state stays as it was).
	// The exporter reuses what it read of a chain while the hook looks the
	// same (see chain.Manager.Snapshot); it sees the hook change and drops
	// the chain from the next scrape.
	h.detachXDP(h.iface)
	if _, err := prom.WaitFor(ctx, fmt.Sprintf(`absent(kfm_chain_info{%s})`, sel), 20*time.Second, equals(1)); err != nil {
		t.Errorf("chain detached by hand still exported: %v\nscrape:\n%s", err, scrape(t, addr))
	}
	// kfm status (which reads every chain in full) calls
	// it drift, and a no-op-looking apply --locked puts the chain back.
	hs := hookOf(h.status(), h.iface, "xdp")
	if hs == nil || hs.Backend != "" || !slices.ContainsFunc(hs.Drift, func(d string) bool { return strings.Contains(d, "locked but not running") }) {
		t.Errorf("status after the chain was detached by hand: %+v", hs)
	}
	h.mustKFM("apply", "--locked")
	if hs := hookOf(h.status(), h.iface, "xdp"); hs == nil || len(hs.Programs) != 2 || len(hs.Drift) != 0 {
		t.Errorf("status after apply --locked repaired the chain: %+v", hs)
	}
	if _, err := prom.WaitFor(ctx, fmt.Sprintf(`kfm_chain_programs{%s}`, sel), 20*time.Second, equals(2)); err != nil {
		t.Errorf("repaired chain not exported: %v", err)
	}
	if targets, err := prom.Targets(ctx); err != nil || targets["http://"+addr+"/metrics"] != "up" {
		t.Errorf("targets %v %v", targets, err)
	}
}

// TestPrometheusScrapesTCChain: on tcx and on classic tc, tc_count (a
// local object with the bundle.yaml beside it) counts exactly the N
// datagrams sent while Prometheus scrapes.
func TestPrometheusScrapesTCChain(t *testing.T) {
	for _, backend := range []string{"tcx", "tc"} {
		t.Run(backend, func(t *testing.T) {
			h := newHost(t)
			disableIPv6(t, h.pair.A, h.pair.AIf)
			h.mustKFM("install", samplesDir+"tc_count.o", "--iface", h.iface, "--hook", "tc-ingress", "--backend", backend, "--name", "tc-count")
			addr := h.serveMetrics()
			prom := promtest.Start(t, addr, &promtest.Options{ScrapeInterval: 500 * time.Millisecond})
			ctx := context.Background()
			sel := fmt.Sprintf(`interface=%q,hook="tc-ingress",program="tc-count",position="0"`, h.iface)
			if _, err := prom.WaitFor(ctx, fmt.Sprintf(`kfm_chain_info{interface=%q,hook="tc-ingress",backend=%q}`, h.iface, backend), 30*time.Second, equals(1)); err != nil {
				t.Fatalf("chain info: %v\nscrape:\n%s", err, scrape(t, addr))
			}
			before := h.mapPackets("tc-ingress", "tc-count", "totals", 0)
			const n = 40
			if got := h.traffic(n, 7000); got[7000] != n {
				t.Fatalf("received %v, want %d", got, n)
			}
			after := h.mapPackets("tc-ingress", "tc-count", "totals", 0)
			if after-before != n {
				t.Fatalf("the kernel counted %d packets, want %d (stray traffic on the link?)", after-before, n)
			}
			q := fmt.Sprintf(`tc_count_packets_total{%s}`, sel)
			if _, err := prom.WaitFor(ctx, q, 20*time.Second, equals(float64(after))); err != nil {
				t.Errorf("%v\nscrape:\n%s", err, scrape(t, addr))
			}
			// kfm's verdict counter of the program saw every packet the
			// program's own map counted (one scrape: the same instant),
			// and it returned ok for each.
			q = fmt.Sprintf(`sum(kfm_program_packets_total{%[1]s,program="tc-count",verdict="ok"}) - sum(tc_count_packets_total{%[1]s}) == 0 and sum(kfm_program_packets_total{%[1]s,program="tc-count"}) >= %[2]d`, sel, n)
			if _, err := prom.WaitFor(ctx, q, 20*time.Second, equals(0)); err != nil {
				t.Errorf("verdict counter: %v\nscrape:\n%s", err, scrape(t, addr))
			}
			if !strings.Contains(scrape(t, addr), `kfm_program_info{digest="",hook="tc-ingress",interface="`+h.iface+`",netns="",origin="kfm",position="0",program="tc-count"`) {
				t.Errorf("program info missing:\n%s", scrape(t, addr))
			}
		})
	}
}

// TestMetricsOnce: `kfm metrics --once` reads a locally installed port
// filter's declarations from the bundle.yaml beside its object and reports
// exactly the drops; a broken bundle.yaml beside an object stops the
// install with a message naming the file.
func TestMetricsOnce(t *testing.T) {
	h := newHost(t)
	dir := t.TempDir()
	obj := filepath.Join(dir, "pf.o")
	copyFile(t, samplesDir+"xdp_portfilter.o", obj)
	if err := os.WriteFile(filepath.Join(dir, "pf.bundle.yaml"), []byte("programs:\n  - function: xdp_portfilter\n    metrics:\n      - {name: pf_drops_total, type: counter, map: drops, value: packet}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := h.kfm("install", obj, "--iface", h.iface, "--param", "port=7777")
	if code == exitOK || !strings.Contains(stderr, "pf.bundle.yaml") || !strings.Contains(stderr, `no field "packet" (it has packets, bytes)`) {
		t.Fatalf("install with a broken bundle.yaml: exit %d: %s", code, stderr)
	}
	copyFile(t, samplesDir+"xdp_portfilter.bundle.yaml", filepath.Join(dir, "pf.bundle.yaml"))
	h.mustKFM("install", obj, "--iface", h.iface, "--param", "port=7777", "--priority", "20")
	h.mustKFM("install", samplesDir+"xdp_ratelimit.o", "--iface", h.iface, "--name", "ratelimit", "--priority", "10")
	h.mustKFM("install", samplesDir+"xdp_count.o", "--iface", h.iface, "--name", "count", "--priority", "30")
	const n = 25
	if got := h.traffic(n, 7777, 7778); got[7777] != 0 || got[7778] != n {
		t.Fatalf("received %v", got)
	}
	out := h.mustKFM("metrics", "--once")
	// Every metric of the Grafana dashboard is there (the ones of
	// applies and reconciles come from long-running processes).
	checkDashboard(t, out+opsExposition(t))
	for _, want := range []string{
		fmt.Sprintf(`portfilter_dropped_packets_total{digest="",hook="xdp",interface=%q,netns="",position="1",program="xdp_portfilter"} %d`, h.iface, n),
		fmt.Sprintf(`count_packets_total{digest="",hook="xdp",interface=%q,netns="",position="2",program="count",proto="17"} %d`, h.iface, n),
		fmt.Sprintf(`ratelimit_passed_packets_total{digest="",hook="xdp",interface=%q,netns="",position="0",program="ratelimit"} %d`, h.iface, 2*n),
		fmt.Sprintf(`kfm_map_entries{digest="",hook="xdp",interface=%q,map="buckets",netns="",position="0",program="ratelimit"} 1`, h.iface),
		"# TYPE portfilter_dropped_packets_total counter",
		"# HELP portfilter_dropped_packets_total Packets dropped because of their destination port.",
		`kfm_exporter_errors{collector="declared"} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kfm metrics --once lacks %s:\n%s", want, out)
		}
	}
	var fams []family
	if err := json.Unmarshal([]byte(h.mustKFM("metrics", "--once", "-o", "json")), &fams); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range fams {
		if f.Name == "portfilter_dropped_packets_total" {
			found = f.Type == "counter" && len(f.Samples) == 1 && f.Samples[0].Value != nil && *f.Samples[0].Value == n &&
				f.Samples[0].Labels["program"] == "xdp_portfilter" && f.Samples[0].Labels["interface"] == h.iface
			if !found {
				t.Errorf("-o json: %+v", f)
			}
		}
	}
	if !found {
		t.Error("-o json has no portfilter_dropped_packets_total")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestInspectListsMetrics: kfm inspect lists the metrics a bundle declares
// (text and -o json), for a published bundle and for an object with its
// bundle.yaml beside it.
func TestInspectListsMetrics(t *testing.T) {
	cliEnv(t)
	r := testregistry.Start(t, testregistry.Options{})
	ref := r.Ref("net/count", "1.0.0")
	if _, stderr, code := kfm(t, "", "publish", samplesDir+"xdp_count.o", ref, "--bundle", samplesDir+"xdp_count.bundle.yaml"); code != exitOK {
		t.Fatalf("publish: %s", stderr)
	}
	for _, arg := range []string{ref, samplesDir + "xdp_count.o"} {
		out, stderr, code := kfm(t, "", "inspect", arg)
		if code != exitOK {
			t.Fatalf("inspect %s: exit %d: %s", arg, code, stderr)
		}
		if !regexp.MustCompile(`(?m)^METRICS\n\s+PROGRAM\s+NAME\s+TYPE\s+MAP\s+VALUE\s+LABELS\s+HELP\n\s+xdp_count\s+count_packets_total\s+counter\s+counters\s+packets\s+proto\s+IPv4 and IPv6 packets seen`).MatchString(out) {
			t.Errorf("inspect %s lists no metrics:\n%s", arg, out)
		}
		out, _, code = kfm(t, "", "inspect", arg, "-o", "json")
		var doc struct {
			Config struct {
				Programs []struct {
					Metrics []registry.MetricConfig `json:"metrics"`
				} `json:"programs"`
			} `json:"config"`
			Metrics []registry.MetricConfig `json:"metrics"`
		}
		if err := json.Unmarshal([]byte(out), &doc); code != exitOK || err != nil {
			t.Fatalf("inspect -o json: %v: %s", err, out)
		}
		ms := doc.Metrics
		if len(doc.Config.Programs) > 0 {
			ms = doc.Config.Programs[0].Metrics
		}
		if len(ms) != 2 || ms[0].Name != "count_packets_total" || ms[0].Map != "counters" || len(ms[0].Labels) != 1 || ms[0].Labels[0].Name != "proto" {
			t.Errorf("inspect %s -o json: metrics %+v", arg, ms)
		}
	}
}
