package chainbench_test

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/bpf/internal/chaintest"
	"github.com/kfm-project/kfm/bpf/rewrite"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/internal/testenv"
)

// BenchmarkCounters: the cost of kfm's verdict counters (rewrite.Count),
// counters off and on side by side, per backend:
//
//   - xdp/single: one program as the dispatcher loads it (unrewritten;
//     the EXT program runs the same instructions), off and with Count.
//   - tc/tcnext: one program rewritten as tcx and tc load it (TCNext; they
//     put the gate's check in front, which the count does not touch, and
//     which needs a context, which BPF_PROG_TEST_RUN then does not time),
//     off and with Count first.
//   - {xdp,tc-ingress}/tailcall/N=n: the tailcall backend's root running
//     a chain of n programs, off and with every program counting.
//
// Each program does one unit of work (bench.c, reps=1). The off and on
// programs run alternately in short BPF_PROG_TEST_RUN calls (benchCall
// repetitions), so that both see the same machine; what is reported is,
// per variant, the fastest call's wall time per repetition (off-ns/pkt,
// on-ns/pkt: robust against other processes on a shared machine, and
// finer than the kernel's own figure, which it truncates to whole
// nanoseconds) and the difference per program (count-ns/prog = (on - off)
// / n), the figure the 2 ns budget is about; see benchPair.
func BenchmarkCounters(b *testing.B) {
	testenv.RequirePrivileged(b)
	obj := chaintest.Object(b, "bench")
	frame := udpFrame()
	tcnext := func(insns asm.Instructions) (asm.Instructions, error) { return rewrite.TCNext(insns, []int32{0}) }

	b.Run("xdp/single", func(b *testing.B) {
		m := newCounters(b)
		off := single(b, obj, "xdp_bench", 1, nil)
		on := singleWith(b, obj, "xdp_bench", counted(nil), m)
		benchPair(b, off, on, 1, frame)
		checkCounted(b, m, bpf.XDPPass)
	})
	b.Run("tc/tcnext", func(b *testing.B) {
		m := newCounters(b)
		off := single(b, obj, "tc_bench", 1, tcnext)
		on := singleWith(b, obj, "tc_bench", counted(tcnext), m)
		benchPair(b, off, on, 1, frame)
		checkCounted(b, m, bpf.TCOK)
	})
	for _, hook := range []bpf.Hook{bpf.HookXDP, bpf.HookTCIngress} {
		fn, pass := "xdp_bench", bpf.XDPPass
		if hook.IsTC() {
			fn, pass = "tc_bench", bpf.TCOK
		}
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/tailcall/N=%d", hook, n), func(b *testing.B) {
				// Four chains, off, on, on, off: whichever chain is
				// set up later runs a few ns slower (seen on the
				// development machine in either order), so the
				// average of both orders cancels that out.
				var offs, ons []*ebpf.Program
				var maps []*ebpf.Map
				for _, on := range []bool{false, true, true, false} {
					env := chaintest.NewEnv(b, hook)
					be := tailcall.New()
					comps := benchComponents(b, obj, fn, n)
					if on {
						for i := range comps {
							comps[i].Counters = newCounters(b)
							maps = append(maps, comps[i].Counters)
						}
					}
					env.Apply(b, be, comps)
					b.Cleanup(func() { env.TryApply(be, nil, bpf.PrepareOptions{}) })
					root, err := ebpf.NewProgramFromID(env.Current(b, be).RootID)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { root.Close() })
					if on {
						ons = append(ons, root)
					} else {
						offs = append(offs, root)
					}
				}
				benchPairs(b, offs, ons, n, frame)
				for _, m := range maps {
					checkCounted(b, m, pass)
				}
			})
		}
	}
}

func newCounters(tb testing.TB) *ebpf.Map {
	tb.Helper()
	m, err := counters.New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// counted is Count followed by next (if any).
func counted(next func(asm.Instructions) (asm.Instructions, error)) func(asm.Instructions) (asm.Instructions, error) {
	return func(insns asm.Instructions) (asm.Instructions, error) {
		insns, err := rewrite.Count(insns, counters.MapName)
		if err != nil || next == nil {
			return insns, err
		}
		return next(insns)
	}
}

// singleWith is single with rw referencing the counter map m.
func singleWith(tb testing.TB, obj *bpf.Object, fn string, rw func(asm.Instructions) (asm.Instructions, error), m *ebpf.Map) *ebpf.Program {
	tb.Helper()
	spec, err := obj.Spec(map[string]string{"reps": "1"})
	if err != nil {
		tb.Fatal(err)
	}
	ps := spec.Programs[fn]
	if ps.Instructions, err = rw(ps.Instructions); err != nil {
		tb.Fatal(err)
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{fn: ps}
	spec.Maps[counters.MapName] = counters.MapSpec()
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{counters.MapName: m}})
	if err != nil {
		tb.Fatal(err)
	}
	p := coll.DetachProgram(fn)
	coll.Close()
	tb.Cleanup(func() { p.Close() })
	return p
}

// benchPair runs off and on alternately, b.N repetitions each in calls of
// benchCall repetitions, and reports per variant the fastest call's wall
// time per repetition and (on - off) / n from those (count-ns/prog), and
// the same difference from the kernel's own per-run times
// (kcount-ns/prog: the kernel leaves out the time the call spent
// preempted, but truncates to whole nanoseconds, so it is precise only for
// the longer chains).
func benchPair(b *testing.B, off, on *ebpf.Program, n int, frame []byte) {
	b.Helper()
	benchPairs(b, []*ebpf.Program{off}, []*ebpf.Program{on}, n, frame)
}

// benchPairs is benchPair with several programs per variant, whose
// fastest calls are averaged.
func benchPairs(b *testing.B, offs, ons []*ebpf.Program, n int, frame []byte) {
	b.Helper()
	progs := append(slices.Clone(offs), ons...)
	for _, p := range progs {
		if _, err := p.Run(&ebpf.RunOptions{Data: frame}); err != nil {
			b.Fatal(err)
		}
	}
	best := make([]float64, len(progs))
	kbest := make([]time.Duration, len(progs))
	for i := range progs {
		best[i], kbest[i] = math.Inf(1), math.MaxInt64
	}
	b.ResetTimer()
	for left := b.N; left > 0; {
		rep := min(left, benchCall)
		for i, p := range progs {
			start := time.Now()
			_, perRun, err := p.Benchmark(frame, rep, nil)
			if err != nil {
				b.Fatal(err)
			}
			best[i] = min(best[i], float64(time.Since(start).Nanoseconds())/float64(rep))
			kbest[i] = min(kbest[i], perRun)
		}
		left -= rep
	}
	b.StopTimer()
	avg := func(from, to int) (wall, kernel float64) {
		for i := from; i < to; i++ {
			wall += best[i]
			kernel += float64(kbest[i])
		}
		return wall / float64(to-from), kernel / float64(to-from)
	}
	offWall, offKernel := avg(0, len(offs))
	onWall, onKernel := avg(len(offs), len(progs))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(offWall, "off-ns/pkt")
	b.ReportMetric(onWall, "on-ns/pkt")
	b.ReportMetric((onWall-offWall)/float64(n), "count-ns/prog")
	b.ReportMetric((onKernel-offKernel)/float64(n), "kcount-ns/prog")
}

// benchCall is the number of repetitions per BPF_PROG_TEST_RUN call: short
// enough (tens to hundreds of microseconds) that many calls run without
// being preempted on a busy machine.
const benchCall = 1 << 12

// checkCounted fails unless the counters saw packets, every one with
// verdict want.
func checkCounted(b *testing.B, m *ebpf.Map, want bpf.Action) {
	b.Helper()
	c, err := counters.Read(m)
	if err != nil {
		b.Fatal(err)
	}
	if c.Total() == 0 || c.Verdict(want) != c.Total() {
		b.Fatalf("counters %v: want every run counted with verdict %d", c, want)
	}
}
