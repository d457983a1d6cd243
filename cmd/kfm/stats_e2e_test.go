package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
)

// tagObject is the chain tests' program (bpf/internal/chaintest/tag.c):
// xdp_tag and tc_tag return the param verdict for IPv4 UDP packets to the
// param port (0: any) and pass everything else; with the default verdict
// they pass everything.
const tagObject = "../../bpf/internal/chaintest/tag.o"

// statsCase is one backend the verdict counters are tested on.
type statsCase struct {
	hook, backend, function string
	drop                    string // the verdict number the filter drops with
	dropName, passName      string // the names kfm stats gives drop and pass
}

var statsCases = []statsCase{
	{"xdp", "tailcall", "xdp_tag", "1", "drop", "pass"},
	{"tc-ingress", "tcx", "tc_tag", "2", "shot", "ok"},
	{"tc-ingress", "tc", "tc_tag", "2", "shot", "ok"},
	{"tc-ingress", "tailcall", "tc_tag", "2", "shot", "ok"},
}

func (sc statsCase) name() string { return sc.hook + "/" + sc.backend }

// install puts tag.o's function on the case's hook as name.
func (h *host) installTag(sc statsCase, name, prio string, extra ...string) {
	h.t.Helper()
	args := append([]string{"install", tagObject, "--iface", h.iface, "--hook", sc.hook, "--backend", sc.backend,
		"--function", sc.function, "--name", name, "--priority", prio}, extra...)
	h.mustKFM(args...)
}

// stats runs kfm stats -o json for the managed interface and returns the
// chain on hook.
func (h *host) stats(hook string, extra ...string) chain.ChainStats {
	h.t.Helper()
	out := h.mustKFM(append([]string{"stats", "--iface", h.iface, "-o", "json"}, extra...)...)
	var cs []chain.ChainStats
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		h.t.Fatalf("stats -o json: %v\n%s", err, out)
	}
	for _, c := range cs {
		if string(c.Hook) == hook {
			return c
		}
	}
	h.t.Fatalf("kfm stats shows no chain on %s: %s", hook, out)
	return chain.ChainStats{}
}

func programStats(t *testing.T, c chain.ChainStats, name string) chain.ProgramStats {
	t.Helper()
	for _, p := range c.Programs {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("kfm stats shows no program %s: %+v", name, c.Programs)
	return chain.ProgramStats{}
}

func verdict(p chain.ProgramStats, name string) uint64 {
	for _, v := range p.Verdicts {
		if v.Verdict == name {
			return v.Packets
		}
	}
	return 0
}

// TestStatsVerdictCounts: a filter that drops the datagrams to one port,
// followed by a program that passes everything and by one installed with
// --counters=false. After D datagrams to the filtered port and N-D to
// another, kfm stats says exactly: the filter dropped D and passed N-D, the
// program after it passed N-D, the third one has no counters. The counts
// are the programs' own verdicts, before kfm maps them to a tail call or
// to TC's "next".
func TestStatsVerdictCounts(t *testing.T) {
	const n, d = 50, 20
	for _, sc := range statsCases {
		t.Run(sc.name(), func(t *testing.T) {
			h := newHost(t)
			h.pair.DisableIPv6(t)
			h.installTag(sc, "filter", "10", "--param", "port=7777", "--param", "verdict="+sc.drop)
			h.installTag(sc, "passer", "20")
			h.installTag(sc, "quiet", "30", "--counters=false")

			got := h.traffic(d, 7777)
			for port, c := range h.traffic(n-d, 8888) {
				got[port] = c
			}
			if got[7777] != 0 || got[8888] != n-d {
				t.Fatalf("received %d datagrams to the filtered port (want 0) and %d to the other (want %d)", got[7777], got[8888], n-d)
			}

			c := h.stats(sc.hook)
			if c.Backend != sc.backend {
				t.Fatalf("backend %s, want %s", c.Backend, sc.backend)
			}
			f, p, q := programStats(t, c, "filter"), programStats(t, c, "passer"), programStats(t, c, "quiet")
			if !f.Counting || f.Packets != n || verdict(f, sc.dropName) != d || verdict(f, sc.passName) != n-d {
				t.Errorf("filter: %d packets, verdicts %+v; want %d: %s=%d %s=%d", f.Packets, f.Verdicts, n, sc.dropName, d, sc.passName, n-d)
			}
			if !p.Counting || p.Packets != n-d || verdict(p, sc.passName) != n-d {
				t.Errorf("passer: %d packets, verdicts %+v; want %s=%d only", p.Packets, p.Verdicts, sc.passName, n-d)
			}
			if q.Counting || q.Verdicts != nil {
				t.Errorf("quiet (--counters=false) has counters: %+v", q)
			}
			if f.Position != 0 || p.Position != 1 || q.Position != 2 {
				t.Errorf("positions %d %d %d, want run order 0 1 2", f.Position, p.Position, q.Position)
			}
			// Which programs the kernel times on their own.
			if sc.backend == "tailcall" {
				if f.Run != nil || !strings.Contains(f.NotTimed, "tail call") {
					t.Errorf("tailcall program: run stats %+v, not timed %q", f.Run, f.NotTimed)
				}
			} else if f.Run == nil || f.NotTimed != "" {
				t.Errorf("%s program: run stats %+v, not timed %q", sc.backend, f.Run, f.NotTimed)
			}
			if lp := h.lock().Chains[0].Programs; len(lp) != 3 || !lp[0].CountersOn() || lp[2].CountersOn() {
				t.Errorf("kfm.lock counters: %+v", lp)
			}
			if !strings.Contains(h.readConfig("kfm.yaml"), "counters: false") {
				t.Errorf("kfm.yaml does not record --counters=false:\n%s", h.readConfig("kfm.yaml"))
			}

			// Text: a row per program in run order with its counts.
			out := h.mustKFM("stats", "--iface", h.iface)
			t.Logf("kfm stats:\n%s", out)
			if !strings.Contains(out, strings.ToUpper(sc.dropName)) || !strings.Contains(out, "backend "+sc.backend) {
				t.Errorf("kfm stats:\n%s", out)
			}
			for _, want := range [][]string{{"0", "filter", "50"}, {"1", "passer", "30"}, {"2", "quiet", "-"}} {
				if !hasRow(out, want) {
					t.Errorf("kfm stats has no row starting %q:\n%s", want, out)
				}
			}

			// --interval: two samples, rates over the time between them
			// (nothing was sent meanwhile: 0 packets/s).
			ci := h.stats(sc.hook, "--interval", "200ms")
			if fi := programStats(t, ci, "filter"); ci.Interval < 200*time.Millisecond || fi.PacketsPerSecond == nil || *fi.PacketsPerSecond != 0 || len(fi.VerdictRates) == 0 {
				t.Errorf("stats --interval: interval %s, filter %+v", ci.Interval, fi)
			}

			// Switching counters off for the filter reloads it without
			// them and removes their pin; on again starts from zero.
			h.installTag(sc, "filter", "10", "--param", "port=7777", "--param", "verdict="+sc.drop, "--counters=false")
			if f := programStats(t, h.stats(sc.hook), "filter"); f.Counting {
				t.Errorf("filter still counts after --counters=false: %+v", f)
			}
			h.installTag(sc, "filter", "10", "--param", "port=7777", "--param", "verdict="+sc.drop, "--counters=true")
			h.traffic(5, 7777)
			if f := programStats(t, h.stats(sc.hook), "filter"); !f.Counting || f.Packets != 5 || verdict(f, sc.dropName) != 5 {
				t.Errorf("filter with counters on again: %+v, want 5 dropped", f)
			}
		})
	}
}

func hasRow(out string, fields []string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		// POS NAME ID PACKETS
		if f[0] == fields[0] && f[1] == fields[1] && f[3] == fields[2] {
			return true
		}
	}
	return false
}

// TestStatsSurviveReorder: the counters live with the program's state, so
// they survive a reorder under traffic: while datagrams stream to a
// filtered and an open port, the filter moves behind the other program and
// back (both reloaded on every backend but tcx, where a reorder reloads
// them too: the gate bits change). Every datagram passed the filter exactly
// once, in the old chain or the new one: what the counters say before the
// reorder plus what they gained after adds up to what was sent.
func TestStatsSurviveReorder(t *testing.T) {
	for _, sc := range statsCases[:3] {
		t.Run(sc.name(), func(t *testing.T) {
			h := newHost(t)
			h.pair.DisableIPv6(t)
			h.installTag(sc, "filter", "10", "--param", "port=7777", "--param", "verdict="+sc.drop)
			h.installTag(sc, "passer", "20")
			recv := netns.Listen(t, h.pair.B, h.pair.BAddr, 8888)
			sender := netns.NewSender(t, h.pair.A)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			closed := sender.StartStream(ctx, netip.AddrPortFrom(h.pair.BAddr, 7777), 500)
			open := sender.StartStream(ctx, netip.AddrPortFrom(h.pair.BAddr, 8888), 500)
			time.Sleep(200 * time.Millisecond)
			before := programStats(t, h.stats(sc.hook), "filter")
			id := before.ProgramID
			h.installTag(sc, "filter", "30", "--param", "port=7777", "--param", "verdict="+sc.drop)
			mid := programStats(t, h.stats(sc.hook), "filter")
			if mid.Position != 1 {
				t.Fatalf("filter at position %d after the reorder", mid.Position)
			}
			if mid.Packets < before.Packets {
				t.Errorf("the reorder reset the counters: %d packets before, %d after", before.Packets, mid.Packets)
			}
			h.installTag(sc, "filter", "10", "--param", "port=7777", "--param", "verdict="+sc.drop)
			time.Sleep(200 * time.Millisecond)
			cancel()
			sentClosed, err1 := closed.Wait()
			sentOpen, err2 := open.Wait()
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			recv.WaitFor(sentOpen, 3*time.Second)

			after := programStats(t, h.stats(sc.hook), "filter")
			t.Logf("%s: sent %d+%d; filter ids %d -> %d -> %d; before %d, after %d", sc.name(), sentClosed, sentOpen, id, mid.ProgramID, after.ProgramID, before.Packets, after.Packets)
			if after.ProgramID == id {
				t.Errorf("filter program %d was not reloaded by the reorder", id)
			}
			if got := recv.Count(); got != sentOpen {
				t.Errorf("received %d of %d datagrams to the open port", got, sentOpen)
			}
			if verdict(after, sc.dropName) != sentClosed || verdict(after, sc.passName) != sentOpen || after.Packets != sentClosed+sentOpen {
				t.Errorf("filter counted %+v (%d packets); sent %d to the filtered port, %d to the open one", after.Verdicts, after.Packets, sentClosed, sentOpen)
			}
		})
	}
}
