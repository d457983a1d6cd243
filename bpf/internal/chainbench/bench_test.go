package chainbench_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/chaintest"
	"github.com/kfm-project/kfm/bpf/internal/clsact"
	"github.com/kfm-project/kfm/bpf/rewrite"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/bpf/tc"
	"github.com/kfm-project/kfm/internal/packet"
	"github.com/kfm-project/kfm/internal/testenv"
)

// What is measured
//
// BenchmarkTestRun: BPF_PROG_TEST_RUN of what the hook runs, on one UDP
// frame: a single bench program doing N units of work (reps=N), against the
// tailcall backend's root running a chain of N bench programs doing one unit
// each (XDP and TC), and a single program rewritten by rewrite.TCNext (what
// tcx and tc load). The kernel times the repetitions itself; ns/op is per
// packet. tcx and tc chains cannot be run by BPF_PROG_TEST_RUN as a whole
// (the kernel runs one program per call), hence:
//
// BenchmarkVeth: real packets. A UDP socket in one namespace sends to the
// other end of a veth pair, whose TC ingress hook runs either the single
// program (reps=N) or a chain of N programs through the tcx, tc or tailcall
// backend. veth delivers synchronously in the sender's softirq, so the
// sender's time per datagram includes the whole receive path; the chain's
// extra cost is the difference to the single program, which is a small part
// of the ~2 µs a datagram costs, so compare within one run.

var sizes = []int{1, 2, 3, 5, 10}

func udpFrame() []byte {
	return packet.UDP(netip.MustParseAddrPort("198.18.0.1:4000"), netip.MustParseAddrPort("198.18.0.2:7000"), make([]byte, 32)).MustMarshal()
}

func benchComponents(tb testing.TB, obj *bpf.Object, fn string, n int) []bpf.Component {
	maps := chaintest.NewMaps(tb, obj)
	var cs []chaintest.Component
	for i := 0; i < n; i++ {
		cs = append(cs, chaintest.Component{Obj: obj, Name: fmt.Sprintf("p%d", i), Function: fn, Priority: i, Params: map[string]string{"reps": "1"}, Maps: maps})
	}
	return chaintest.Build(tb, cs...)
}

func single(tb testing.TB, obj *bpf.Object, fn string, reps int, rw func(asm.Instructions) (asm.Instructions, error)) *ebpf.Program {
	tb.Helper()
	spec, err := obj.Spec(map[string]string{"reps": fmt.Sprint(reps)})
	if err != nil {
		tb.Fatal(err)
	}
	ps := spec.Programs[fn]
	if rw != nil {
		if ps.Instructions, err = rw(ps.Instructions); err != nil {
			tb.Fatal(err)
		}
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{fn: ps}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		tb.Fatal(err)
	}
	p := coll.DetachProgram(fn)
	coll.Close()
	tb.Cleanup(func() { p.Close() })
	return p
}

func BenchmarkTestRun(b *testing.B) {
	testenv.RequirePrivileged(b)
	obj := chaintest.Object(b, "bench")
	frame := udpFrame()
	for _, hook := range []bpf.Hook{bpf.HookXDP, bpf.HookTCIngress} {
		fn := "xdp_bench"
		if hook.IsTC() {
			fn = "tc_bench"
		}
		for _, n := range sizes {
			b.Run(fmt.Sprintf("%s/N=%d/single", hook, n), func(b *testing.B) {
				bench(b, single(b, obj, fn, n, nil), frame)
			})
			if hook.IsTC() {
				b.Run(fmt.Sprintf("%s/N=%d/single-rewritten-tcnext", hook, n), func(b *testing.B) {
					bench(b, single(b, obj, fn, n, func(i asm.Instructions) (asm.Instructions, error) { return rewrite.TCNext(i, []int32{0}) }), frame)
				})
				// What tcx and tc load: TCNext behind the gate's check,
				// with the program's bit set (it runs) or not (it
				// returns at once), side by side with TCNext alone, all
				// three timed the same way.
				gated := single(b, obj, fn, n, func(i asm.Instructions) (asm.Instructions, error) {
					return rewrite.TCNextGated(i, []int32{0}, rewrite.Gate{Offset: gateOffset, Bit: 5})
				})
				for _, v := range []struct {
					name string
					p    *ebpf.Program
					word uint32
				}{
					{"tcnext-wall", single(b, obj, fn, n, func(i asm.Instructions) (asm.Instructions, error) { return rewrite.TCNext(i, []int32{0}) }), 1 << 5},
					{"gated-open", gated, 1 << 5},
					{"gated-closed", gated, 1 << 6},
				} {
					b.Run(fmt.Sprintf("%s/N=%d/single-rewritten-%s", hook, n, v.name), func(b *testing.B) {
						benchCB(b, v.p, frame, v.word)
					})
				}
			}
			b.Run(fmt.Sprintf("%s/N=%d/tailcall", hook, n), func(b *testing.B) {
				env := chaintest.NewEnv(b, hook)
				be := tailcall.New()
				env.Apply(b, be, benchComponents(b, obj, fn, n))
				root, err := ebpf.NewProgramFromID(env.Current(b, be).RootID)
				if err != nil {
					b.Fatal(err)
				}
				defer root.Close()
				bench(b, root, frame)
				env.TryApply(be, nil, bpf.PrepareOptions{})
			})
		}
	}
}

// bench runs p b.N times in the kernel and reports the kernel's time per
// run as ns/op.
func bench(b *testing.B, p *ebpf.Program, frame []byte) {
	b.Helper()
	// Warm up, and check the program passes the frame.
	ret, err := p.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		b.Fatal(err)
	}
	if ret != uint32(bpf.XDPPass) && ret != uint32(bpf.TCOK) && ret != 0xffffffff {
		b.Fatalf("program returned %d", ret)
	}
	b.ResetTimer()
	var total time.Duration
	left := b.N
	for left > 0 {
		rep := min(left, 1<<22)
		_, perRun, err := p.Benchmark(frame, rep, nil)
		if err != nil {
			b.Fatal(err)
		}
		total += perRun * time.Duration(rep)
		left -= rep
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt")
}

// gateOffset is offsetof(struct __sk_buff, cb[4]), the word tc.GateCB
// names.
const gateOffset = 12*4 + tc.GateCB*4

// benchCB runs p b.N times with skb->cb[4] = word and reports the wall
// time per run as ns/pkt (BPF_PROG_TEST_RUN reports no duration when a
// context is given through cilium/ebpf's Run); large repeat counts make the
// syscall's own cost negligible.
func benchCB(b *testing.B, p *ebpf.Program, frame []byte, word uint32) {
	b.Helper()
	var ctx struct {
		Before [12]uint32
		CB     [5]uint32
	}
	ctx.CB[tc.GateCB] = word
	if _, err := p.Run(&ebpf.RunOptions{Data: frame, Context: ctx}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	left := b.N
	for left > 0 {
		rep := min(left, 1<<22)
		if _, err := p.Run(&ebpf.RunOptions{Data: frame, Context: ctx, Repeat: uint32(rep)}); err != nil {
			b.Fatal(err)
		}
		left -= rep
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "ns/pkt")
}

func BenchmarkVeth(b *testing.B) {
	testenv.RequirePrivileged(b)
	obj := chaintest.Object(b, "bench")
	unspec := bpf.Actions{bpf.TCUnspec}
	for _, n := range sizes {
		for _, v := range []struct {
			name    string
			backend func() chaintest.Backend
			classic bool // bracket with cls_bpf filters instead of TCX links
			single  bool
		}{
			{"single-tcx", func() chaintest.Backend { return tc.NewTCX() }, false, true},
			{"tcx", func() chaintest.Backend { return tc.NewTCX() }, false, false},
			{"single-tc", func() chaintest.Backend { return tc.NewTC() }, true, true},
			{"tc", func() chaintest.Backend { return tc.NewTC() }, true, false},
			{"tailcall", func() chaintest.Backend { return tailcall.New() }, false, false},
		} {
			b.Run(fmt.Sprintf("N=%d/%s", n, v.name), func(b *testing.B) {
				env := chaintest.NewEnv(b, bpf.HookTCIngress)
				maps := chaintest.NewMaps(b, obj)
				timing := maps["timing"]
				bracket := func(fn string, first bool) {
					p := loadWith(b, obj, fn, maps)
					env.Do(b, func() error {
						if v.classic {
							if err := clsact.Ensure(env.Target.Ifindex); err != nil {
								return err
							}
							prio := uint16(1)
							if !first {
								prio = 0xfff0
							}
							return clsact.Add(env.Target.Ifindex, env.Target.Hook, prio, 1, p, fn)
						}
						anchor := link.Tail()
						if first {
							anchor = link.Head()
						}
						l, err := link.AttachTCX(link.TCXOptions{Interface: env.Target.Ifindex, Program: p, Attach: ebpf.AttachTCXIngress, Anchor: anchor})
						if err == nil {
							b.Cleanup(func() { l.Close() })
						}
						return err
					})
				}
				// Every program returns TC_ACT_UNSPEC and proceeds on it,
				// so that the packet reaches tc_tend after the chain with
				// every backend (a tail-call chain's last verdict is the
				// hook's verdict).
				var cs []chaintest.Component
				if v.single {
					cs = append(cs, chaintest.Component{Obj: obj, Name: "single", Function: "tc_bench", ProceedOn: unspec,
						Params: map[string]string{"reps": fmt.Sprint(n), "tc_verdict": "-1"}, Maps: maps})
				} else {
					for i := 0; i < n; i++ {
						cs = append(cs, chaintest.Component{Obj: obj, Name: fmt.Sprintf("p%d", i), Function: "tc_bench", Priority: i, ProceedOn: unspec,
							Params: map[string]string{"reps": "1", "tc_verdict": "-1"}, Maps: maps})
					}
				}
				be := v.backend()
				bracket("tc_tstart", true)
				env.Apply(b, be, chaintest.Build(b, cs...))
				defer env.TryApply(be, nil, bpf.PrepareOptions{})
				bracket("tc_tend", false)
				send(b, env, 1000) // warm up
				if err := timing.Put(uint32(0), make([]struct{ Start, Sum, Count uint64 }, ebpf.MustPossibleCPU())); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				send(b, env, b.N)
				b.StopTimer()
				var vals []struct{ Start, Sum, Count uint64 }
				if err := timing.Lookup(uint32(0), &vals); err != nil {
					b.Fatal(err)
				}
				var sum, count uint64
				for _, v := range vals {
					sum, count = sum+v.Sum, count+v.Count
				}
				if count < uint64(b.N) {
					b.Fatalf("%d of %d packets went through the chain", count, b.N)
				}
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(float64(sum)/float64(count), "ns/pkt")
			})
		}
	}
}

func loadWith(tb testing.TB, obj *bpf.Object, fn string, maps map[string]*ebpf.Map) *ebpf.Program {
	tb.Helper()
	spec, err := obj.Spec(nil)
	if err != nil {
		tb.Fatal(err)
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{fn: spec.Programs[fn]}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: maps})
	if err != nil {
		tb.Fatal(err)
	}
	p := coll.DetachProgram(fn)
	coll.Close()
	tb.Cleanup(func() { p.Close() })
	return p
}

// send sends n datagrams from A to B through the hook. The receiving
// socket is never read: datagrams are dropped at its full queue, after the
// TC hook, without an ICMP error.
func send(b *testing.B, env *chaintest.Env, n int) {
	b.Helper()
	var sink *net.UDPConn
	err := env.Pair.B.Do(func() error {
		var err error
		sink, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(env.Pair.BAddr, 7001)))
		if err == nil {
			err = sink.SetReadBuffer(4096)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	var fd int
	err = env.Pair.A.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrInet4{Port: 7001, Addr: env.Pair.BAddr.As4()}
	payload := make([]byte, 32)
	for i := 0; i < n; i++ {
		if err := unix.Sendto(fd, payload, 0, to); err != nil {
			b.Fatal(err)
		}
	}
}
