package main

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// tmux is a private tmux server (its own socket) running one session.
type tmux struct {
	t      *testing.T
	bin    string
	socket string
}

func (tm *tmux) run(args ...string) (string, error) {
	out, err := exec.Command(tm.bin, append([]string{"-S", tm.socket}, args...)...).CombinedOutput()
	return string(out), err
}

// screen is what the pane shows now.
func (tm *tmux) screen() string {
	tm.t.Helper()
	out, err := tm.run("capture-pane", "-p", "-t", "top")
	if err != nil {
		tm.t.Fatalf("tmux capture-pane: %v: %s", err, out)
	}
	return out
}

// waitScreen waits until ok accepts the screen (at most 15 s) and returns
// it.
func (tm *tmux) waitScreen(what string, ok func(string) bool) string {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := tm.screen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("kfm top never showed %s; screen:\n%s", what, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// topLine is one program line of kfm top's screen.
type topLine struct {
	pos, name          string
	pps, drop, ns, cpu string
}

// topLines parses the program lines of the screen in the order shown.
func topLines(screen string) []topLine {
	var out []topLine
	for _, l := range strings.Split(screen, "\n") {
		f := strings.Fields(l)
		// CHAIN is two words (interface, hook): iface hook backend pos name pps drop ns cpu
		if len(f) != 9 || f[0] == "CHAIN" {
			continue
		}
		out = append(out, topLine{pos: f[3], name: f[4], pps: f[5], drop: f[6], ns: f[7], cpu: f[8]})
	}
	return out
}

func lineOf(lines []topLine, name string) (topLine, bool) {
	for _, l := range lines {
		if l.name == name {
			return l, true
		}
	}
	return topLine{}, false
}

// TestTop runs kfm top in a terminal (tmux), as a user would, while
// datagrams stream through a tcx chain of a filter that drops the ones to
// one port and a program after it: the screen refreshes with packets/s,
// drop % (about half for the filter: both ports get the same rate),
// ns/packet and CPU % per program; keys re-sort the view; q quits.
func TestTop(t *testing.T) {
	bin := testenv.RequireTool(t, "tmux")
	h := newHost(t)
	h.pair.DisableIPv6(t)
	sc := statsCases[1] // tcx: the kernel times every program
	h.installTag(sc, "filter", "10", "--param", "port=7777", "--param", "verdict="+sc.drop)
	h.installTag(sc, "passer", "20")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sender := netns.NewSender(t, h.pair.A)
	sender.StartStream(ctx, netip.AddrPortFrom(h.pair.BAddr, 7777), 200)
	sender.StartStream(ctx, netip.AddrPortFrom(h.pair.BAddr, 8888), 200)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tm := &tmux{t: t, bin: bin, socket: filepath.Join(t.TempDir(), "tmux.sock")}
	env := []string{"env", asKFMEnv + "=" + h.pair.B.Path()}
	for _, k := range []string{"KFM_CONFIG_DIR", "KFM_STATE_DIR", "KFM_CACHE_DIR", "KFM_BPFFS"} {
		env = append(env, k+"="+os.Getenv(k))
	}
	command := strings.Join(append(env, exe, "top", "--iface", h.iface), " ")
	if out, err := tm.run("new-session", "-d", "-s", "top", "-x", "150", "-y", "30", command); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() { tm.run("kill-server") })

	// A refreshed frame with rates: the filter sees both streams and
	// drops half, the passer sees one and drops nothing.
	screen := tm.waitScreen("rates", func(s string) bool {
		f, ok1 := lineOf(topLines(s), "filter")
		p, ok2 := lineOf(topLines(s), "passer")
		return ok1 && ok2 && f.pps != "-" && f.pps != "0" && p.pps != "-" && f.drop != "-"
	})
	t.Logf("kfm top:\n%s", screen)
	lines := topLines(screen)
	f, _ := lineOf(lines, "filter")
	p, _ := lineOf(lines, "passer")
	fpps, _ := strconv.ParseFloat(f.pps, 64)
	ppps, _ := strconv.ParseFloat(p.pps, 64)
	fdrop, _ := strconv.ParseFloat(f.drop, 64)
	if fpps < 100 || fpps > 800 || ppps < 50 || ppps > 400 || fdrop < 30 || fdrop > 70 || p.drop != "0.0" {
		t.Errorf("filter %+v, passer %+v: want about 400 and 200 packets/s, drop about 50%% and 0%%\n%s", f, p, screen)
	}
	if ns, err := strconv.ParseFloat(f.ns, 64); err != nil || ns <= 0 {
		t.Errorf("filter ns/packet %q: the kernel times tcx programs\n%s", f.ns, screen)
	}
	if _, ok := lineOf(lines, "*"); !ok {
		t.Errorf("no chain row (*):\n%s", screen)
	}
	if !strings.Contains(screen, "[o run order]") {
		t.Errorf("header does not show the run order sort:\n%s", screen)
	}

	// d sorts by drop %: the filter first. p by packets/s: the filter
	// (two streams) before the passer (one).
	for _, key := range []struct{ key, header, first string }{{"d", "[d drop %]", "filter"}, {"o", "[o run order]", "*"}} {
		if out, err := tm.run("send-keys", "-t", "top", key.key); err != nil {
			t.Fatalf("tmux send-keys: %v: %s", err, out)
		}
		screen = tm.waitScreen(key.header, func(s string) bool { return strings.Contains(s, key.header) })
		if l := topLines(screen); len(l) == 0 || l[0].name != key.first {
			t.Errorf("after %s the first line is %+v, want %s:\n%s", key.key, l, key.first, screen)
		}
	}

	if out, err := tm.run("send-keys", "-t", "top", "q"); err != nil {
		t.Fatalf("tmux send-keys q: %v: %s", err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := tm.run("has-session", "-t", "top"); err != nil {
			break // kfm top exited, and the session with it
		}
		if time.Now().After(deadline) {
			t.Fatalf("kfm top still runs after q:\n%s", tm.screen())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
