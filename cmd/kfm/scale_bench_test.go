package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// What is measured
//
// BenchmarkReadPath times what kfm does, again and again, on a host that
// already runs many chains (issues 11 and 12): the read path. The host
// has KFM_BENCH_CHAINS chains (default 300) of five signed registry
// programs: one XDP chain (tailcall backend) on one end of as many veth
// pairs, built by one `kfm apply`. The programs are the samples with
// their bundle.yaml (declared metrics): ratelimit (an LRU hash of 16384
// entries), icmpdrop, portfilter, count and xdp_pass.
//
//   - status: `kfm status -o json`, in-process (inside the namespace of the
//     interfaces): read the host state, kfm.yaml and kfm.lock, every
//     interface's hooks from the kernel, and compare with the lock.
//   - apply-locked: `kfm apply --locked` when the kernel already runs the
//     lock: a no-op, which must change nothing (checked: the program IDs
//     stay).
//   - scrape: one Prometheus scrape (text format) of the exporter `kfm
//     metrics` serves, driven by one chain.Manager as `kfm metrics` does
//     (in-process here, so that -cpuprofile sees it; BenchmarkScrape runs
//     the command as its own process and reports its RSS).
//
// ns/op is the mean of one command; run with -benchtime 10x or so (the
// set-up, one cold apply of every chain, takes a minute on a loaded
// 2-core machine). Profile with -cpuprofile and
// -run '^$' -bench 'ReadPath/status'.
func BenchmarkReadPath(b *testing.B) {
	n := benchChains(b)
	h := newHost(b)
	progs := []struct{ name, obj, repo string }{
		{"ratelimit", samplesDir + "xdp_ratelimit.o", "bench/ratelimit"},
		{"icmpdrop", samplesDir + "xdp_icmpdrop.o", "bench/icmpdrop"},
		{"portfilter", samplesDir + "xdp_portfilter.o", "bench/portfilter"},
		{"pass", testprogDir + "xdp_pass.o", "bench/pass"},
		{"count", samplesDir + "xdp_count.o", "bench/count"},
	}
	for _, p := range progs {
		var extra []string
		if bf := strings.TrimSuffix(p.obj, ".o") + ".bundle.yaml"; fileExists(bf) {
			extra = []string{"--bundle", bf}
		}
		h.publish(p.obj, p.repo, "1.0.0", "", extra...)
	}
	var y strings.Builder
	y.WriteString("version: 1\nchains:\n")
	err := h.pair.B.Do(func() error {
		for i := range n {
			name := fmt.Sprintf("kfmr%d", i)
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return fmt.Errorf("add %s: %w", name, err)
			}
			fmt.Fprintf(&y, "  - interface: %s\n    hook: xdp\n    backend: tailcall\n    programs:\n", name)
			for j, p := range progs {
				fmt.Fprintf(&y, "      - {name: %s, ref: %q, priority: %d}\n", p.name, h.reg.Ref(p.repo, "1.0.0"), 10*(j+1))
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
	ids := func() map[string]string {
		out := map[string]string{}
		for _, hs := range h.hostState().Hooks {
			var s []string
			for _, e := range hs.Elements {
				s = append(s, strconv.Itoa(int(e.ProgramID)))
			}
			out[hs.Interface] = strings.Join(s, ",")
		}
		return out
	}
	before := ids()
	if len(before) != n {
		b.Fatalf("host state records %d chains, want %d", len(before), n)
	}

	b.Run("status", func(b *testing.B) {
		profile(b, "status")
		defer cpuPerOp(b)()
		for b.Loop() {
			h.mustKFM("status", "-o", "json")
		}
	})
	b.Run("apply-locked", func(b *testing.B) {
		profile(b, "apply-locked")
		cpu := cpuPerOp(b)
		for b.Loop() {
			h.mustKFM("apply", "--locked")
		}
		cpu()
		after := ids()
		for iface, want := range before {
			if after[iface] != want {
				b.Fatalf("no-op apply --locked changed %s: programs %s, were %s", iface, after[iface], want)
			}
		}
	})
	b.Run("scrape", func(b *testing.B) {
		// One exporter (one chain.Manager) for every scrape, as kfm
		// metrics has.
		url := "http://" + h.serveMetrics() + "/metrics"
		series := 0
		profile(b, "scrape")
		cpu := cpuPerOp(b)
		for b.Loop() {
			series = scrapeSeries(b, url)
		}
		cpu()
		b.ReportMetric(float64(series), "series/scrape")
		if series < n*5 {
			b.Fatalf("a scrape of %d chains gave %d series", n, series)
		}
	})
}

// profile writes a CPU profile of the rest of the sub-benchmark to
// $KFM_BENCH_PROFILE_DIR/name.pprof when that is set (-cpuprofile would
// mix in the set-up, one cold apply of every chain).
func profile(b *testing.B, name string) {
	dir := os.Getenv("KFM_BENCH_PROFILE_DIR")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}

// cpuPerOp starts counting the CPU time of the process (user and system,
// every thread) and returns the function that reports it per iteration
// as cpu-ms/op: on a shared machine the wall time mostly says how long
// the benchmark waited for a CPU.
func cpuPerOp(b *testing.B) (stop func()) {
	start := selfCPU(b)
	return func() {
		b.ReportMetric(float64((selfCPU(b)-start).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	}
}

func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

// benchChains is KFM_BENCH_CHAINS (default 300).
func benchChains(b *testing.B) int {
	n := 300
	if v := os.Getenv("KFM_BENCH_CHAINS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("KFM_BENCH_CHAINS=%q", v)
		}
	}
	return n
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// scrapeSeries scrapes url and counts the series.
func scrapeSeries(b *testing.B, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	series := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			series++
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return series
}
