package dispatcher

// Interoperability with libxdp: the real xdp-loader of xdp-tools 1.3.1
// (Debian bookworm) runs in the test's namespace, on the same chain as kfm.
// Both tools must use the same BPF filesystem: `ip netns exec` remounts
// /sys, hiding /sys/fs/bpf, so xdp-loader gets the test's private bpffs
// through LIBXDP_BPFFS. Like the other freplace tests these run in the
// kernel VMs.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
)

// xdpLoader runs xdp-loader in namespace B against the test's bpffs.
func (e *env) xdpLoader(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.xdpLoaderErr(args...)
	if err != nil {
		t.Fatalf("xdp-loader %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) xdpLoaderErr(args ...string) (string, error) {
	bin, err := exec.LookPath("xdp-loader")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", e.pair.B.Name, bin}, args...)...)
	cmd.Env = append(os.Environ(), "LIBXDP_BPFFS="+e.target.BPFFS)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// loaderProgram is one component line of `xdp-loader status`.
type loaderProgram struct {
	Prio    int
	Name    string
	ID      ebpf.ProgramID
	Tag     string
	Actions string
}

// loaderStatus is what `xdp-loader status IF` shows: the dispatcher's
// name, mode and ID, and its programs in run order.
type loaderStatus struct {
	Main     string
	Mode     string
	MainID   ebpf.ProgramID
	Programs []loaderProgram
}

// status runs `xdp-loader status IF` and parses its table:
//
//	Interface        Prio  Program name      Mode     ID   Tag               Chain actions
//	--------------------------------------------------------------------------------------
//	kfb1234          xdp_dispatcher    native   42   4d7e87c0d30db711
//	 =>              10     count_udp_packets          44   ...               XDP_DROP,XDP_PASS
//
// (xdp-loader, like kfm, completes names the kernel truncated from BTF.)
func (e *env) status(t *testing.T) loaderStatus {
	t.Helper()
	out := e.xdpLoader(t, "status", e.target.Interface)
	var st loaderStatus
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 6 && f[0] == "=>":
			prio, err1 := strconv.Atoi(f[1])
			id, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil {
				t.Fatalf("xdp-loader status line %q", line)
			}
			st.Programs = append(st.Programs, loaderProgram{prio, f[2], ebpf.ProgramID(id), f[4], f[5]})
		case len(f) >= 5 && f[0] == e.target.Interface:
			id, err := strconv.ParseUint(f[3], 10, 32)
			if err != nil {
				t.Fatalf("xdp-loader status line %q", line)
			}
			st.Main, st.Mode, st.MainID = f[1], f[2], ebpf.ProgramID(id)
		}
	}
	t.Logf("xdp-loader status:\n%s", out)
	return st
}

// programCounter opens the counter map of a running program (one xdp-loader
// loaded).
func programCounter(t *testing.T, id ebpf.ProgramID) counter {
	t.Helper()
	for _, mid := range programMaps(t, id) {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			t.Fatal(err)
		}
		info, err := m.Info()
		if err == nil && info.Name == "counter" {
			t.Cleanup(func() { m.Close() })
			return counter{m}
		}
		m.Close()
	}
	t.Fatalf("program %d has no counter map", id)
	return counter{}
}

func byName(c *bpf.Chain, name string) bpf.ChainProgram {
	for _, p := range c.Programs {
		if p.Name == name {
			return p
		}
	}
	return bpf.ChainProgram{}
}

// TestInteropKFMFirst: programs kfm installs show in `xdp-loader status`
// with their priorities and chain actions; `xdp-loader load` adds its
// program into kfm's chain at its priority; kfm reads the whole chain in
// run order and removes its own program without disturbing xdp-loader's;
// `xdp-loader unload --all` leaves nothing behind.
func TestInteropKFMFirst(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	cnt, counts := comp(t, "count", "count_udp_packets", 10, passDrop, nil)
	pa, _ := comp(t, "pass", "pass_all", 30, pass, nil)
	progs := e.apply(t, cnt, pa)
	root := e.current(t).RootID

	st := e.status(t)
	if st.Main != ProgramName || st.Mode != "native" || st.MainID != root {
		t.Errorf("xdp-loader sees %s in %s mode (id %d), want %s native %d", st.Main, st.Mode, st.MainID, ProgramName, root)
	}
	want := []loaderProgram{
		{10, "count_udp_packets", progs[0].ID, progs[0].Tag, "XDP_DROP,XDP_PASS"},
		{30, "pass_all", progs[1].ID, progs[1].Tag, "XDP_PASS"},
	}
	if !slices.Equal(st.Programs, want) {
		t.Fatalf("xdp-loader status programs\n%+v\nwant\n%+v", st.Programs, want)
	}

	// xdp-loader adds libxdp_a (XDP_RUN_CONFIG priority 15) between them.
	e.xdpLoader(t, "load", e.target.Interface, filepath.Join("testdata", "libxdp_a.o"))
	c := e.current(t)
	if got := names(c.Programs); !slices.Equal(got, []string{"count_udp_packets", "libxdp_a", "pass_all"}) {
		t.Fatalf("Current after xdp-loader load: %v", got)
	}
	la := byName(c, "libxdp_a")
	if la.Priority != 15 || !slices.Equal(la.ProceedOn, pass) {
		t.Errorf("libxdp_a read as %+v, want priority 15, proceed on pass", la)
	}
	if c.Programs[0].ID != progs[0].ID || c.Programs[2].ID != progs[1].ID {
		t.Errorf("xdp-loader's change reloaded kfm's programs: %+v, were %+v", c.Programs, progs)
	}
	laCount := programCounter(t, la.ID)
	tr.send(t, 25)
	if got := tr.received(25); got != 25 {
		t.Errorf("%d of 25 arrived", got)
	}
	if a, b := counts.waitFor(t, 25), laCount.waitFor(t, 25); a != 25 || b != 25 {
		t.Errorf("kfm's counter saw %d, xdp-loader's %d, want 25 each", a, b)
	}

	// kfm removes its pass_all, keeps libxdp_a.
	e.apply(t, keep(c.Programs[0]), keep(la))
	st = e.status(t)
	if len(st.Programs) != 2 || st.Programs[0].ID != progs[0].ID || st.Programs[1].ID != la.ID || st.Programs[1].Prio != 15 {
		t.Fatalf("xdp-loader status after kfm's removal: %+v", st.Programs)
	}

	e.xdpLoader(t, "unload", e.target.Interface, "--all")
	if got := e.attached(t); got != 0 {
		t.Fatalf("after xdp-loader unload --all the hook runs %d", got)
	}
	if entries, err := os.ReadDir(xdpDir(e.target.BPFFS)); err != nil || len(entries) != 0 {
		t.Fatalf("xdp-loader unload --all left %v (%v)", entries, err)
	}
	if c := e.current(t); c != nil {
		t.Fatalf("Current after unload: %+v", c)
	}
}

// TestInteropXDPLoaderFirst: after `xdp-loader load IF a.o b.o`, kfm reads
// libxdp's chain, joins it with a program of its own (keeping xdp-loader's
// programs and their state), xdp-loader sees and removes its own program
// from the joint chain, and kfm removes the rest.
func TestInteropXDPLoaderFirst(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	e.xdpLoader(t, "load", e.target.Interface, filepath.Join("testdata", "libxdp_a.o"), filepath.Join("testdata", "libxdp_b.o"))
	c := e.current(t)
	if got := names(c.Programs); !slices.Equal(got, []string{"libxdp_a", "libxdp_b"}) {
		t.Fatalf("Current of xdp-loader's chain: %v", got)
	}
	if c.Version != 2 || c.Programs[0].Priority != 15 || c.Programs[1].Priority != 35 {
		t.Errorf("xdp-loader's chain read as version %d, priorities %d %d; want 2, 15, 35", c.Version, c.Programs[0].Priority, c.Programs[1].Priority)
	}
	la, lb := c.Programs[0], c.Programs[1]
	aCount, bCount := programCounter(t, la.ID), programCounter(t, lb.ID)
	tr.send(t, 10)
	aCount.waitFor(t, 10)
	bCount.waitFor(t, 10)

	cnt, counts := comp(t, "count", "count_udp_packets", 20, pass, nil)
	progs := e.apply(t, keep(la), cnt, keep(lb))
	got := e.current(t)
	if names(got.Programs)[1] != "count_udp_packets" || got.Programs[0].ID != la.ID || got.Programs[2].ID != lb.ID {
		t.Fatalf("joint chain %+v", got.Programs)
	}
	tr.send(t, 10)
	if got := tr.received(20); got != 20 {
		t.Errorf("%d of 20 arrived", got)
	}
	if a, k, b := aCount.waitFor(t, 20), counts.waitFor(t, 10), bCount.waitFor(t, 20); a != 20 || k != 10 || b != 20 {
		t.Errorf("counters a %d, kfm %d, b %d; want 20 (state kept), 10, 20", a, k, b)
	}

	st := e.status(t)
	want := []loaderProgram{
		{15, "libxdp_a", la.ID, la.Tag, "XDP_PASS"},
		{20, "count_udp_packets", progs[1].ID, progs[1].Tag, "XDP_PASS"},
		{35, "libxdp_b", lb.ID, lb.Tag, "XDP_PASS"},
	}
	if !slices.Equal(st.Programs, want) {
		t.Fatalf("xdp-loader status\n%+v\nwant\n%+v", st.Programs, want)
	}

	// xdp-loader removes its b from the joint chain; kfm's stays.
	e.xdpLoader(t, "unload", e.target.Interface, "--id", strconv.Itoa(int(lb.ID)))
	if got := names(e.current(t).Programs); !slices.Equal(got, []string{"libxdp_a", "count_udp_packets"}) {
		t.Fatalf("after xdp-loader unload of b: %v", got)
	}
	tr.send(t, 10)
	if k := counts.waitFor(t, 20); k != 20 {
		t.Errorf("kfm's counter saw %d of 20 after xdp-loader's change", k)
	}

	// kfm removes everything.
	var ch bpf.Change
	e.in(t, func() (err error) {
		ch, err = e.b.Prepare(context.Background(), e.target, nil, bpf.PrepareOptions{})
		return err
	})
	defer ch.Close()
	e.in(t, func() error { return ch.Commit(context.Background()) })
	out := e.xdpLoader(t, "status", e.target.Interface)
	if !strings.Contains(out, "No XDP program loaded") {
		t.Errorf("xdp-loader status after kfm removed everything:\n%s", out)
	}
	if entries, err := os.ReadDir(xdpDir(e.target.BPFFS)); err != nil || len(entries) != 0 {
		t.Fatalf("left behind: %v (%v)", entries, err)
	}
}

// TestInteropXDPLoaderSingle: xdp-loader's one-program chain (its program
// replaces the dispatcher's main function, as kfm's does) grows into a
// two-program chain with kfm's program; xdp-loader's program moves to a
// slot and keeps counting in the same map.
func TestInteropXDPLoaderSingle(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	e.xdpLoader(t, "load", e.target.Interface, filepath.Join("testdata", "libxdp_b.o"))
	c := e.current(t)
	if got := names(c.Programs); !slices.Equal(got, []string{"libxdp_b"}) {
		t.Fatalf("Current of xdp-loader's single program: %v", got)
	}
	lb := c.Programs[0]
	bCount := programCounter(t, lb.ID)
	tr.send(t, 10)
	bCount.waitFor(t, 10)

	cnt, counts := comp(t, "count", "count_udp_packets", 40, pass, nil)
	progs := e.apply(t, keep(lb), cnt)
	e.checkChain(t, progs)
	tr.send(t, 10)
	if got := tr.received(20); got != 20 {
		t.Errorf("%d of 20 arrived", got)
	}
	if b, k := bCount.waitFor(t, 20), counts.waitFor(t, 10); b != 20 || k != 10 {
		t.Errorf("xdp-loader's program counted %d (want 20), kfm's %d (want 10)", b, k)
	}
	st := e.status(t)
	if len(st.Programs) != 2 || st.Programs[0].ID != lb.ID || st.Programs[1].Prio != 40 {
		t.Errorf("xdp-loader status: %+v", st.Programs)
	}
}
