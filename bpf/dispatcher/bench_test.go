package dispatcher

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/internal/testenv"
)

// benchRepeat is how often the kernel runs a dispatcher per
// BPF_PROG_TEST_RUN call; it reports the mean time per run in whole
// nanoseconds. The metrics are interquartile means over the benchmark's
// iterations.
const benchRepeat = 1_000_000

// benchPair loads kfm's dispatcher and libxdp's xdp-dispatcher.o (xdp-tools
// 1.3.1) with the same configuration: n enabled slots, each going on after
// XDP_PASS and after the empty slot's verdict.
func benchPair(b *testing.B, n int) (kfm, libxdp *ebpf.Program) {
	b.Helper()
	cfg := stubConfig(n, -1)
	spec, err := Spec()
	if err != nil {
		b.Fatal(err)
	}
	kfm, err = LoadDispatcher(spec, cfg, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { kfm.Close() })
	lspec, err := ebpf.LoadCollectionSpec(libxdpObject)
	if err != nil {
		b.Fatalf("libxdp's dispatcher object (install xdp-tools: make deps): %v", err)
	}
	libxdp, err = LoadDispatcher(lspec, cfg, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { libxdp.Close() })
	return kfm, libxdp
}

// runPair runs both dispatchers once each (alternating which goes first, so
// that neither always runs on a warmer cache) and returns the kernel's
// nanoseconds per packet for each.
func runPair(b *testing.B, i int, kfm, libxdp *ebpf.Program, pkt []byte) (k, l float64) {
	b.Helper()
	run := func(p *ebpf.Program) float64 {
		ret, d, err := p.Benchmark(pkt, benchRepeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != 2 {
			b.Fatalf("verdict %d, want XDP_PASS", ret)
		}
		return float64(d.Nanoseconds())
	}
	if i%2 == 0 {
		k = run(kfm)
		l = run(libxdp)
	} else {
		l = run(libxdp)
		k = run(kfm)
	}
	return k, l
}

// BenchmarkDispatcher measures the data-path cost of kfm's dispatcher with 0
// to 10 enabled slots, side by side with libxdp's dispatcher object loaded
// with the same configuration, through BPF_PROG_TEST_RUN (a 64-byte packet,
// benchRepeat runs per call; ns/pkt is the kernel's own measurement). The
// slots are the empty stubs, as the host refuses freplace: this is the cost
// of the dispatcher itself, the calls and the chain-call checks, which is
// what differs between the two; a component costs the same in both.
//
// Metrics: kfm-ns/pkt, libxdp-ns/pkt and their ratio kfm/libxdp (goal:
// <= 1).
func BenchmarkDispatcher(b *testing.B) {
	testenv.RequirePrivileged(b)
	pkt := make([]byte, 64)
	for n := 0; n <= MaxPrograms; n++ {
		b.Run(fmt.Sprintf("slots=%d", n), func(b *testing.B) {
			kfm, libxdp := benchPair(b, n)
			var k, l []float64
			for b.Loop() {
				dk, dl := runPair(b, len(k), kfm, libxdp, pkt)
				k = append(k, dk)
				l = append(l, dl)
			}
			mk, ml := robustMean(k), robustMean(l)
			b.ReportMetric(mk, "kfm-ns/pkt")
			b.ReportMetric(ml, "libxdp-ns/pkt")
			b.ReportMetric(mk/ml, "kfm/libxdp")
		})
	}
}

// BenchmarkDispatcherPerSlot fits a line through the (interquartile mean) time per
// packet of 0 to 10 enabled slots (least squares) for both dispatchers and reports its
// slope, the cost of one slot, which the kernel's whole-nanosecond figures
// give more precisely than any single slot count.
func BenchmarkDispatcherPerSlot(b *testing.B) {
	testenv.RequirePrivileged(b)
	pkt := make([]byte, 64)
	var kfms, libxdps [MaxPrograms + 1]*ebpf.Program
	for n := range kfms {
		kfms[n], libxdps[n] = benchPair(b, n)
	}
	var ks, ls [MaxPrograms + 1][]float64
	i := 0
	for b.Loop() {
		for n := range kfms {
			dk, dl := runPair(b, i, kfms[n], libxdps[n], pkt)
			ks[n] = append(ks[n], dk)
			ls[n] = append(ls[n], dl)
		}
		i++
	}
	var km, lm [MaxPrograms + 1]float64
	for n := range km {
		km[n], lm[n] = robustMean(ks[n]), robustMean(ls[n])
	}
	kslope, kb := slope(km[:])
	lslope, lb := slope(lm[:])
	b.ReportMetric(kslope, "kfm-ns/slot")
	b.ReportMetric(lslope, "libxdp-ns/slot")
	b.ReportMetric(kslope/lslope, "kfm/libxdp")
	b.ReportMetric(kb, "kfm-ns/base")
	b.ReportMetric(lb, "libxdp-ns/base")
}

// slope fits y = a*x + c through (n, ys[n]) and returns a and c.
func slope(ys []float64) (a, c float64) {
	var sx, sy, sxx, sxy float64
	m := float64(len(ys))
	for n, y := range ys {
		x := float64(n)
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	a = (m*sxy - sx*sy) / (m*sxx - sx*sx)
	c = (sy - a*sx) / m
	return a, c
}

// robustMean is the interquartile mean of the samples: the mean of the
// middle half. The host is shared, and it shrugs off the runs another
// process disturbed, while averaging the kernel's whole nanoseconds finer
// than a median would.
func robustMean(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	lo, hi := len(s)/4, len(s)-len(s)/4
	var sum float64
	for _, x := range s[lo:hi] {
		sum += x
	}
	return sum / float64(hi-lo)
}
