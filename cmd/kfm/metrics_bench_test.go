package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// What is measured
//
// BenchmarkScrape times one scrape of `kfm metrics` (a child process
// running the command, in the namespace of the chains) over HTTP, with
// KFM_BENCH_CHAINS chains (default 300) of five programs each: one XDP
// chain (tailcall backend, generic XDP) on one end of as many veth
// pairs, built by one `kfm apply` of a kfm.yaml listing them all. The
// five programs are local objects with their bundle.yaml beside them:
// ratelimit (an LRU hash of 16384 entries: counted for kfm_map_fill_ratio;
// two declared metrics), portfilter (two), icmpdrop (one), count (two, by
// protocol) and xdp_pass (none).
//
// Reported: ms/scrape (the mean), series/scrape, and rss-MiB, the
// exporter's resident set (VmRSS of the kfm metrics process) after the
// scrapes. The exporter is this test binary, or $KFM_BIN (KFM_BIN=bin/kfm
// after make build: what users run).
//
// Measured on the 2-core development VM (kernel 6.18) while seven other
// helpers built and tested (load average 35-40): 300 chains of 5, 4548
// series per scrape, 5.2 s per scrape, RSS 54 MiB (the apply of the 300
// chains took 48 s to 2 min); 60 chains: 0.6 s; 3 chains: 9-50 ms. A CPU
// profile at 100 chains gives about 1 ms of CPU per chain and scrape, the
// rest of the wall time is waiting for the CPU: most of the CPU goes to the
// backends reading each chain from the kernel (tailcall's Current: the
// generation's pins and each program's info from /proc fdinfo), then the
// BPF_MAP_LOOKUP_BATCH walks of the declared maps and of the 16384-entry LRU
// map (an empty hash map still costs a walk of its buckets). Before
// Snapshot looked only at kfm's own hooks (it listed every hook of every
// interface, 1800 with 600 veths) a scrape of 300 chains took 8.2 s.
// Since then the exporter keeps the chains it read, and the maps it opened,
// between scrapes while nothing changed (see chain.Manager.Snapshot);
// BenchmarkReadPath/scrape reports the CPU time of a scrape in-process.
func BenchmarkScrape(b *testing.B) {
	h := newHost(b)
	n := 300
	if v := os.Getenv("KFM_BENCH_CHAINS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("KFM_BENCH_CHAINS=%q", v)
		}
	}
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			b.Fatal(err)
		}
		return a
	}
	progs := []struct{ name, path string }{
		{"ratelimit", abs(samplesDir + "xdp_ratelimit.o")},
		{"portfilter", abs(samplesDir + "xdp_portfilter.o")},
		{"icmpdrop", abs(samplesDir + "xdp_icmpdrop.o")},
		{"count", abs(samplesDir + "xdp_count.o")},
		{"pass", abs(testprogDir + "xdp_pass.o")},
	}
	var y strings.Builder
	y.WriteString("version: 1\nchains:\n")
	err := h.pair.B.Do(func() error {
		for i := range n {
			name := fmt.Sprintf("kfmd%d", i)
			// (No dummy driver on these machines: veth pairs, one end
			// carrying the chain.)
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return fmt.Errorf("add %s: %w", name, err)
			}
			fmt.Fprintf(&y, "  - interface: %s\n    hook: xdp\n    mode: skb\n    programs:\n", name)
			for j, p := range progs {
				fmt.Fprintf(&y, "      - {name: %s, path: %s, priority: %d}\n", p.name, p.path, 10*(j+1))
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	h.writeConfig("kfm.yaml", y.String())
	start := time.Now()
	h.mustKFM("apply")
	b.Logf("apply of %d chains of %d programs: %s", n, len(progs), time.Since(start).Round(time.Millisecond))

	// The exporter as users run it: its own process, in the namespace.
	var addr string
	err = h.pair.B.Do(func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = ln.Addr().String()
		return ln.Close()
	})
	if err != nil {
		b.Fatal(err)
	}
	// KFM_BIN=bin/kfm measures the exporter users run (the launcher runs
	// kfm-core); by default it is this test binary, which links every
	// command (about 20 MiB more resident).
	var p *proc
	if bin := os.Getenv("KFM_BIN"); bin != "" {
		p = h.startBinary(bin, nil, "metrics", "--listen", addr)
	} else {
		p = h.start(nil, "metrics", "--listen", addr)
	}
	// Its 127.0.0.1 is the namespace's: connect from there.
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			var c net.Conn
			err := h.pair.B.Do(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, a)
				return err
			})
			return c, err
		},
	}}
	get := func() (series int) {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
				if os.Getenv("KFM_BENCH_DUMP") != "" {
					fmt.Println(l)
				}
				series++
			}
		}
		io.Copy(io.Discard, resp.Body)
		return series
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("kfm metrics did not start: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	series := get() // warm up
	b.ResetTimer()
	for b.Loop() {
		series = get()
	}
	b.StopTimer()
	b.ReportMetric(float64(series), "series/scrape")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/scrape")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			b.ReportMetric(float64(kb)/1024, "rss-MiB")
		}
	}
}
