package dispatcher_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
)

// installParams is `kfm install testdata/progs.o --function F --name N
// --priority P --param k=v...`.
func (e *kfmEnv) installParams(t *testing.T, function, name string, prio int, params map[string]string) {
	t.Helper()
	obj, err := filepath.Abs(filepath.Join("testdata", "progs.o"))
	if err != nil {
		t.Fatal(err)
	}
	err = e.pair.B.Do(func() error {
		_, err := e.m.Install(context.Background(), chain.InstallRequest{
			Interface: e.pair.BIf, Source: obj, Function: function, Name: name, Priority: &prio, Params: params,
		})
		return err
	})
	if err != nil {
		t.Fatalf("kfm install %s: %v", name, err)
	}
}

// stats is `kfm stats --iface IF`: the XDP chain's program stats by name.
func (e *kfmEnv) stats(t *testing.T) (chain.ChainStats, map[string]chain.ProgramStats) {
	t.Helper()
	var cs []chain.ChainStats
	err := e.pair.B.Do(func() (err error) {
		cs, err = e.m.Stats(context.Background(), e.pair.BIf)
		return err
	})
	if err != nil {
		t.Fatalf("kfm stats: %v", err)
	}
	for _, c := range cs {
		if c.Hook == bpf.HookXDP {
			byName := map[string]chain.ProgramStats{}
			for _, p := range c.Programs {
				byName[p.Name] = p
			}
			return c, byName
		}
	}
	t.Fatalf("kfm stats shows no XDP chain: %+v", cs)
	return chain.ChainStats{}, nil
}

func packets(p chain.ProgramStats, verdict string) uint64 {
	for _, v := range p.Verdicts {
		if v.Verdict == verdict {
			return v.Packets
		}
	}
	return 0
}

// sendPaced sends n datagrams to dst, paced (see traffic.send).
func sendPaced(t *testing.T, s *netns.Sender, dst netip.AddrPort, n int) {
	t.Helper()
	for range n {
		if _, err := s.Send(dst, 1, []byte("kfm-test")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// TestCountersDispatcher: kfm's verdict counters in EXT programs under the
// dispatcher. A filter dropping the datagrams to one port and a program
// after it: kfm stats counts exactly what each returned, the kernel's time
// is the dispatcher's; xdp-loader status shows the chain as before, and
// after xdp-loader adds its own program (a new dispatcher, kfm's programs
// re-attached) the counts go on; a reorder under traffic keeps them: every
// datagram is counted once by the filter.
func TestCountersDispatcher(t *testing.T) {
	e := newKFMEnv(t)
	e.pair.DisableIPv6(t)
	e.installParams(t, "drop_udp", "filter", 10, map[string]string{"port": "7777"})
	e.installParams(t, "pass_all", "passer", 20, nil)
	expect(t, "xdp-loader status", e.loaderLines(t), []string{"drop_udp/10/XDP_PASS", "pass_all/20/XDP_PASS"})

	sender := netns.NewSender(t, e.pair.A)
	recv := netns.Listen(t, e.pair.B, e.pair.BAddr, 8888)
	closed, open := netip.AddrPortFrom(e.pair.BAddr, 7777), netip.AddrPortFrom(e.pair.BAddr, 8888)
	const n, d = 40, 15
	sendPaced(t, sender, closed, d)
	sendPaced(t, sender, open, n-d)
	if got := recv.WaitFor(n-d, 3*time.Second); got != n-d {
		t.Fatalf("received %d of %d datagrams to the open port", got, n-d)
	}

	c, ps := e.stats(t)
	f, p := ps["filter"], ps["passer"]
	if !f.Counting || f.Packets != n || packets(f, "drop") != d || packets(f, "pass") != n-d {
		t.Errorf("filter: %d packets %+v, want %d: drop=%d pass=%d", f.Packets, f.Verdicts, n, d, n-d)
	}
	if !p.Counting || p.Packets != n-d || packets(p, "pass") != n-d {
		t.Errorf("passer: %d packets %+v, want pass=%d", p.Packets, p.Verdicts, n-d)
	}
	if f.Run != nil || !strings.Contains(f.NotTimed, "extension") {
		t.Errorf("an EXT program has run stats %+v (not timed: %q)", f.Run, f.NotTimed)
	}
	if c.Root == nil || c.RootID == 0 {
		t.Errorf("no run stats of the dispatcher: %+v", c)
	}

	// xdp-loader adds a program: a new dispatcher, kfm's extensions
	// re-attached to it, counting on into the same maps.
	e.loader(t, "load", e.pair.BIf, filepath.Join("testdata", "libxdp_a.o"))
	expect(t, "xdp-loader status after its load", e.loaderLines(t), []string{"drop_udp/10/XDP_PASS", "libxdp_a/15/XDP_PASS", "pass_all/20/XDP_PASS"})
	sendPaced(t, sender, open, 10)
	recv.WaitFor(n-d+10, 3*time.Second)
	if _, ps := e.stats(t); packets(ps["filter"], "pass") != n-d+10 || packets(ps["passer"], "pass") != n-d+10 || ps["libxdp_a"].Counting {
		t.Errorf("after xdp-loader load: filter %+v, passer %+v, libxdp_a %+v", ps["filter"].Verdicts, ps["passer"].Verdicts, ps["libxdp_a"])
	}
	_, ps = e.stats(t)
	base := ps["filter"]

	// Reorder under traffic: the filter moves behind the passer.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1 := sender.StartStream(ctx, closed, 300)
	s2 := sender.StartStream(ctx, open, 300)
	time.Sleep(300 * time.Millisecond)
	e.installParams(t, "drop_udp", "filter", 30, map[string]string{"port": "7777"})
	time.Sleep(300 * time.Millisecond)
	cancel()
	sentClosed, err1 := s1.Wait()
	sentOpen, err2 := s2.Wait()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	recv.WaitFor(n-d+10+sentOpen, 3*time.Second)
	expect(t, "xdp-loader status after the reorder", e.loaderLines(t), []string{"libxdp_a/15/XDP_PASS", "pass_all/20/XDP_PASS", "drop_udp/30/XDP_PASS"})
	_, ps = e.stats(t)
	f = ps["filter"]
	if packets(f, "drop")-packets(base, "drop") != sentClosed || packets(f, "pass")-packets(base, "pass") != sentOpen {
		t.Errorf("filter counted %+v before and %+v after streaming %d to the filtered port and %d to the open one", base.Verdicts, f.Verdicts, sentClosed, sentOpen)
	}
}
