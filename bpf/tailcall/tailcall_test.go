package tailcall_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/chaintest"
	"github.com/kfm-project/kfm/bpf/internal/clsact"
	"github.com/kfm-project/kfm/bpf/probe"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/bpf/xdp"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/testprogs"
)

var _ chain.Backend = (*tailcall.Backend)(nil)

// hookCase is one way the backend attaches its root.
type hookCase struct {
	name    string
	hook    bpf.Hook
	backend func() *tailcall.Backend
}

var hookCases = []hookCase{
	{"xdp", bpf.HookXDP, tailcall.New},
	{"tc-ingress", bpf.HookTCIngress, tailcall.New},
	{"tc-egress", bpf.HookTCEgress, tailcall.New},
	{"tc-ingress-classic-root", bpf.HookTCIngress, tailcall.NewClassicTC},
}

func forEachHook(t *testing.T, fn func(t *testing.T, hc hookCase)) {
	for _, hc := range hookCases {
		t.Run(hc.name, func(t *testing.T) { fn(t, hc) })
	}
}

// fixture is an Env with tag programs A, B, C whose counters survive
// reloads.
type fixture struct {
	*chaintest.Env
	b    *tailcall.Backend
	obj  *bpf.Object
	fn   string
	maps map[string]map[string]*ebpf.Map
}

func newFixture(t *testing.T, hc hookCase) *fixture {
	f := &fixture{Env: chaintest.NewEnv(t, hc.hook), b: hc.backend(), obj: chaintest.Object(t, "tag"), fn: "xdp_tag"}
	if hc.hook.IsTC() {
		f.fn = "tc_tag"
	}
	f.maps = map[string]map[string]*ebpf.Map{}
	for _, n := range []string{"A", "B", "C", "D"} {
		f.maps[n] = chaintest.NewMaps(t, f.obj)
	}
	t.Cleanup(func() {
		// Remove whatever runs; the namespaces go with the test anyway.
		f.TryApply(f.b, nil, bpf.PrepareOptions{})
	})
	return f
}

// comp is tag program name (its tag is the name's first letter) at prio.
func (f *fixture) comp(name string, prio int, params ...string) chaintest.Component {
	p := map[string]string{"tag": fmt.Sprint(int(name[0]))}
	for i := 0; i+1 < len(params); i += 2 {
		p[params[i]] = params[i+1]
	}
	return chaintest.Component{Obj: f.obj, Name: name, Function: f.fn, Priority: prio, Params: p, Maps: f.maps[name]}
}

func (f *fixture) count(t *testing.T, name string) uint64 {
	return chaintest.Count(t, f.maps[name]["count"])
}

// drop is the verdict that drops a packet on the fixture's hook.
func (f *fixture) drop() bpf.Action {
	if f.Target.Hook.IsTC() {
		return bpf.TCShot
	}
	return bpf.XDPDrop
}

func (f *fixture) pass() bpf.Action {
	if f.Target.Hook.IsTC() {
		return bpf.TCOK
	}
	return bpf.XDPPass
}

func checkTraces(t *testing.T, got map[string]int, want map[string]int) {
	t.Helper()
	if chaintest.FormatTraces(got) != chaintest.FormatTraces(want) {
		t.Errorf("traces %s, want %s", chaintest.FormatTraces(got), chaintest.FormatTraces(want))
	}
}

func checkCurrent(t *testing.T, f *fixture, want []bpf.ChainProgram) {
	t.Helper()
	c := f.Current(t, f.b)
	if c == nil {
		t.Fatal("Current: no chain")
	}
	if c.Backend != "tailcall" || c.RootID == 0 {
		t.Errorf("Current: backend %q root %d", c.Backend, c.RootID)
	}
	if f.Target.Hook == bpf.HookXDP && c.Mode != "native" {
		t.Errorf("Current: mode %q, want native", c.Mode)
	}
	if len(c.Programs) != len(want) {
		t.Fatalf("Current: %d programs, want %d", len(c.Programs), len(want))
	}
	for i, p := range c.Programs {
		w := want[i]
		if p.Name != w.Name || p.Priority != w.Priority || p.ID != w.ID || p.ID == 0 || p.Tag == "" || !slices.Equal(p.ProceedOn, w.ProceedOn) {
			t.Errorf("Current program %d = %+v, want %+v", i, p, w)
		}
	}
}

func TestRunOrderAndReorder(t *testing.T) {
	forEachHook(t, func(t *testing.T, hc hookCase) {
		f := newFixture(t, hc)
		if c := f.Current(t, f.b); c != nil {
			t.Fatalf("Current before install: %+v", c)
		}
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 10), f.comp("B", 20), f.comp("C", 30)))
		if len(progs) != 3 || progs[0].Priority != 10 || progs[2].Name != f.fn {
			t.Fatalf("Programs() = %+v", progs)
		}
		def := bpf.DefaultProceedOn(hc.hook)
		for _, p := range progs {
			if !slices.Equal(p.ProceedOn, def) {
				t.Errorf("proceed-on %v, want the default %v", p.ProceedOn, def)
			}
		}
		checkCurrent(t, f, progs)
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("ABC", 20))

		// Reorder: new program instances, same maps.
		progs2 := f.Apply(t, f.b, chaintest.Build(t, f.comp("C", 5), f.comp("A", 10), f.comp("B", 20)))
		checkCurrent(t, f, progs2)
		for i := range progs2 {
			for j := range progs {
				if progs2[i].ID == progs[j].ID {
					t.Errorf("program id %d reused: tail-call positions are baked in, every change loads new instances", progs[j].ID)
				}
			}
		}
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("CAB", 20))
		for _, n := range []string{"A", "B", "C"} {
			if got := f.count(t, n); got != 40 {
				t.Errorf("%s counted %d packets, want 40 (state kept across the reorder)", n, got)
			}
		}
		// The old generation is gone: one generation pinned.
		gens, _ := filepath.Glob(filepath.Join(tailcall.Dir(f.Target), "gen-*"))
		if len(gens) != 1 {
			t.Errorf("pinned generations %v, want one", gens)
		}
		// Old programs are freed once unpinned.
		waitGone(t, progs[0].ID)
	})
}

func waitGone(t *testing.T, ids ...ebpf.ProgramID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range ids {
		for {
			p, err := ebpf.NewProgramFromID(id)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				p.Close()
			}
			if time.Now().After(deadline) {
				t.Errorf("program %d still exists", id)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestProceedOnAndParams(t *testing.T) {
	forEachHook(t, func(t *testing.T, hc hookCase) {
		f := newFixture(t, hc)
		drop := fmt.Sprint(int(f.drop()))
		// B drops; it proceeds only on pass: C never sees the packets.
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2, "verdict", drop), f.comp("C", 3)))
		checkTraces(t, f.Traces(t, 20, 0), map[string]int{})
		if a, b, c := f.count(t, "A"), f.count(t, "B"), f.count(t, "C"); a != 20 || b != 20 || c != 0 {
			t.Errorf("counts A=%d B=%d C=%d, want 20 20 0", a, b, c)
		}

		// B proceeds on drop too: C runs, its pass is the verdict.
		cb := f.comp("B", 2, "verdict", drop)
		cb.ProceedOn = bpf.Actions{f.pass(), f.drop()}
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), cb, f.comp("C", 3)))
		checkCurrent(t, f, progs)
		if got := f.Current(t, f.b).Programs[1].ProceedOn; !slices.Equal(got, slices.Sorted(slices.Values(bpf.Actions{f.pass(), f.drop()}))) {
			t.Errorf("Current proceed-on of B = %v", got)
		}
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("ABC", 20))

		// The last program's proceed-on verdict ends the chain as itself.
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("C", 3, "verdict", drop)))
		checkTraces(t, f.Traces(t, 20, 0), map[string]int{})
		if c := f.count(t, "C"); c != 40 {
			t.Errorf("C counted %d, want 40", c)
		}
	})
}

func TestSwapUnderTraffic(t *testing.T) {
	forEachHook(t, func(t *testing.T, hc hookCase) {
		f := newFixture(t, hc)
		ab := func() []bpf.Component { return chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)) }
		ba := func() []bpf.Component { return chaintest.Build(t, f.comp("B", 1), f.comp("A", 2)) }
		f.Apply(t, f.b, ab())

		ctx, cancel := context.WithCancel(context.Background())
		stream := chaintest.StartFlood(t, ctx, f.Pair.A, f.Dst, 10)
		const changes = 50
		start := time.Now()
		for i := 0; i < changes; i++ {
			time.Sleep(2 * time.Millisecond) // traffic between changes too
			if i%2 == 0 {
				f.Apply(t, f.b, ba())
			} else {
				f.Apply(t, f.b, ab())
			}
		}
		elapsed := time.Since(start)
		time.Sleep(20 * time.Millisecond)
		cancel()
		sent, err := stream.Wait()
		if err != nil {
			t.Fatal(err)
		}
		got := f.Recv.WaitFor(int(sent), 5*time.Second)
		a, b := f.count(t, "A"), f.count(t, "B")
		if drops := f.Recv.SocketDrops(t); drops > 0 {
			t.Errorf("the receiving socket dropped %d datagrams (queue full): the test cannot tell what the chain did with them", drops)
		}
		t.Logf("%s: %d chain changes in %v under traffic: sent %d, received %d, A counted %d, B counted %d", hc.name, changes, elapsed.Round(time.Millisecond), sent, got, a, b)
		if sent < 20*changes {
			t.Errorf("only %d datagrams sent: too few in flight during the changes", sent)
		}
		if uint64(got) != sent || a != sent || b != sent {
			t.Errorf("sent %d, received %d, A counted %d, B counted %d: want all equal (nothing lost, skipped or counted twice)", sent, got, a, b)
		}
	})
}

func TestLoadFailureLeavesChain(t *testing.T) {
	forEachHook(t, func(t *testing.T, hc hookCase) {
		f := newFixture(t, hc)
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		before := pins(t, f.Target.BPFFS)

		edge := chaintest.Object(t, "edge")
		fail := chaintest.Component{Obj: edge, Name: "broken", Function: "xdp_fail", Priority: 3}
		if hc.hook.IsTC() {
			fail.Function = "tc_fail"
		}
		_, err := f.TryApply(f.b, chaintest.Build(t, f.comp("B", 1), f.comp("A", 2), fail), bpf.PrepareOptions{})
		if !errors.Is(err, bpf.ErrLoad) || !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "verifier log") {
			t.Fatalf("Prepare with a broken program: %v; want ErrLoad naming it with the verifier log", err)
		}
		t.Logf("error: %v", err)
		if after := pins(t, f.Target.BPFFS); !slices.Equal(before, after) {
			t.Errorf("pins changed by a failed Prepare:\nbefore %v\nafter  %v", before, after)
		}
		checkCurrent(t, f, progs)
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("AB", 20))
	})
}

func TestRevert(t *testing.T) {
	forEachHook(t, func(t *testing.T, hc hookCase) {
		f := newFixture(t, hc)
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		before := pins(t, f.Target.BPFFS)
		for _, next := range [][]bpf.Component{
			chaintest.Build(t, f.comp("B", 1), f.comp("C", 2), f.comp("A", 3)), // switch
			nil, // removal
		} {
			f.Do(t, func() error {
				ctx := context.Background()
				ch, err := f.b.Prepare(ctx, f.Target, next, bpf.PrepareOptions{})
				if err != nil {
					return err
				}
				defer ch.Close()
				if err := ch.Commit(ctx); err != nil {
					return err
				}
				return ch.Revert(ctx)
			})
			checkCurrent(t, f, progs)
			checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("AB", 20))
			if after := pins(t, f.Target.BPFFS); !slices.Equal(before, after) {
				t.Errorf("pins after revert differ:\nbefore %v\nafter  %v", before, after)
			}
		}
	})
}

// TestFirstInstallRevert: reverting the first install takes the root off
// the hook again.
func TestFirstInstallRevert(t *testing.T) {
	forEachHook(t, func(t *testing.T, hc hookCase) {
		f := newFixture(t, hc)
		f.Do(t, func() error {
			ctx := context.Background()
			ch, err := f.b.Prepare(ctx, f.Target, chaintest.Build(t, f.comp("A", 1)), bpf.PrepareOptions{})
			if err != nil {
				return err
			}
			defer ch.Close()
			if err := ch.Commit(ctx); err != nil {
				return err
			}
			return ch.Revert(ctx)
		})
		checkClean(t, f)
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("", 10))
	})
}

func pins(t *testing.T, bpffs string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(bpffs, "kfm"), func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(bpffs, path)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkClean: no pins, nothing of kfm on the hook.
func checkClean(t *testing.T, f *fixture) {
	t.Helper()
	if p := pins(t, f.Target.BPFFS); len(p) != 0 {
		t.Errorf("pins left: %v", p)
	}
	f.Do(t, func() error {
		switch {
		case f.Target.Hook == bpf.HookXDP:
			a, err := xdp.Query(f.Target.Ifindex)
			if err != nil {
				return err
			}
			if a.ProgramID != 0 {
				t.Errorf("XDP program %d still attached", a.ProgramID)
			}
		default:
			attach := ebpf.AttachTCXIngress
			if f.Target.Hook == bpf.HookTCEgress {
				attach = ebpf.AttachTCXEgress
			}
			if probe.TCX() == nil {
				res, err := link.QueryPrograms(link.QueryOptions{Target: f.Target.Ifindex, Attach: attach})
				if err != nil {
					return err
				}
				if len(res.Programs) != 0 {
					t.Errorf("TCX programs left: %+v", res.Programs)
				}
			}
			fs, err := clsact.List(f.Target.Ifindex, f.Target.Hook)
			if err != nil {
				return err
			}
			if len(fs) != 0 {
				t.Errorf("cls_bpf filters left: %+v", fs)
			}
		}
		return nil
	})
	if c := f.Current(t, f.b); c != nil {
		t.Errorf("Current after removal: %+v", c)
	}
}

func TestRemoveAndRelease(t *testing.T) {
	forEachHook(t, func(t *testing.T, hc hookCase) {
		f := newFixture(t, hc)
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		f.Apply(t, f.b, nil)
		checkClean(t, f)
		waitGone(t, progs[0].ID, progs[1].ID)
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("", 10))

		// Release after "another backend took the hook over".
		progs = f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		c := f.Current(t, f.b)
		f.Do(t, func() error {
			if hc.hook == bpf.HookXDP {
				// Another XDP program replaces the root atomically.
				other := passProgram(t, ebpf.XDP)
				root, err := ebpf.NewProgramFromID(c.RootID)
				if err != nil {
					return err
				}
				defer root.Close()
				if err := xdp.Replace(f.Target.Ifindex, other, root, xdp.ModeNative); err != nil {
					return err
				}
				if err := f.b.Release(context.Background(), f.Target); err != nil {
					return err
				}
				return xdp.Replace(f.Target.Ifindex, nil, other, xdp.ModeNative)
			}
			return f.b.Release(context.Background(), f.Target)
		})
		checkClean(t, f)
		waitGone(t, c.RootID, progs[0].ID, progs[1].ID)
	})
}

func passProgram(t *testing.T, typ ebpf.ProgramType) *ebpf.Program {
	t.Helper()
	spec, err := chaintest.Object(t, "bench").Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	name := "xdp_bench"
	if typ != ebpf.XDP {
		name = "tc_bench"
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{name: spec.Programs[name]}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	p := coll.DetachProgram(name)
	coll.Close()
	t.Cleanup(func() { p.Close() })
	return p
}

func TestForeignXDPProgram(t *testing.T) {
	f := newFixture(t, hookCases[0])
	other := passProgram(t, ebpf.XDP)
	f.Do(t, func() error { return xdp.Replace(f.Target.Ifindex, other, nil, xdp.ModeNative) })
	info, _ := other.Info()
	id, _ := info.ID()

	_, err := f.TryApply(f.b, chaintest.Build(t, f.comp("A", 1)), bpf.PrepareOptions{})
	if !errors.Is(err, bpf.ErrForeignProgram) || !strings.Contains(err.Error(), "xdp_bench") {
		t.Fatalf("install over a foreign program: %v, want ErrForeignProgram naming it", err)
	}
	if p := pins(t, f.Target.BPFFS); len(p) != 0 {
		t.Errorf("pins left by the refused install: %v", p)
	}

	// As a backend switch (the program is the other backend's root), the
	// root replaces it in one netlink call.
	ctx, cancel := context.WithCancel(context.Background())
	stream := f.Sender.StartStream(ctx, f.Dst, 5000)
	time.Sleep(50 * time.Millisecond)
	_, err = f.TryApply(f.b, chaintest.Build(t, f.comp("A", 1)), bpf.PrepareOptions{Replace: &bpf.Chain{Backend: "dispatcher", RootID: id}})
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	sent, _ := stream.Wait()
	if got := f.Recv.WaitFor(int(sent), 5*time.Second); uint64(got) != sent {
		t.Errorf("sent %d, received %d across the switch", sent, got)
	}
	c := f.Current(t, f.b)
	if c == nil || len(c.Programs) != 1 {
		t.Fatalf("Current after the switch: %+v", c)
	}
	checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("A", 10))
}

func TestLeftoversFromACrash(t *testing.T) {
	f := newFixture(t, hookCases[0])
	dir := tailcall.Dir(f.Target)
	// A run died after pinning a generation and a root it never attached.
	junk := passProgram(t, ebpf.XDP)
	for _, p := range []string{filepath.Join(dir, "gen-7"), dir} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pa, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	if err := pa.Pin(filepath.Join(dir, "gen-7", "chain")); err != nil {
		t.Fatal(err)
	}
	if err := junk.Pin(filepath.Join(dir, "root")); err != nil {
		t.Fatal(err)
	}
	if c := f.Current(t, f.b); c != nil {
		t.Fatalf("Current with only leftovers: %+v", c)
	}
	progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
	checkCurrent(t, f, progs)
	got := pins(t, f.Target.BPFFS)
	want := []string{"kfm", "kfm/tailcall", "kfm/tailcall/" + fmt.Sprint(f.Target.Ifindex), "kfm/tailcall/" + fmt.Sprint(f.Target.Ifindex) + "/xdp",
		"kfm/tailcall/" + fmt.Sprint(f.Target.Ifindex) + "/xdp/gen-8", "kfm/tailcall/" + fmt.Sprint(f.Target.Ifindex) + "/xdp/gen-8/chain",
		"kfm/tailcall/" + fmt.Sprint(f.Target.Ifindex) + "/xdp/gen-8/meta",
		"kfm/tailcall/" + fmt.Sprint(f.Target.Ifindex) + "/xdp/head", "kfm/tailcall/" + fmt.Sprint(f.Target.Ifindex) + "/xdp/root"}
	if !slices.Equal(got, want) {
		t.Errorf("pins %v\nwant %v", got, want)
	}
	checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("AB", 10))
}

func TestLimits(t *testing.T) {
	f := newFixture(t, hookCases[0])
	var long []chaintest.Component
	for i := 0; i <= tailcall.MaxPrograms; i++ {
		c := f.comp("A", i)
		c.Name = fmt.Sprintf("p%d", i)
		long = append(long, c)
	}
	if _, err := f.TryApply(f.b, chaintest.Build(t, long...), bpf.PrepareOptions{}); !errors.Is(err, tailcall.ErrTooLong) {
		t.Errorf("33 programs: %v, want ErrTooLong", err)
	}
	// 32 programs (the maximum) run, all of them.
	progs := f.Apply(t, f.b, chaintest.Build(t, long[:tailcall.MaxPrograms]...))
	if len(progs) != tailcall.MaxPrograms {
		t.Fatalf("%d programs", len(progs))
	}
	before := f.count(t, "A")
	f.Traces(t, 5, 5)
	if got := f.count(t, "A") - before; got != 5*tailcall.MaxPrograms {
		t.Errorf("32 programs sharing one counter counted %d for 5 packets, want %d", got, 5*tailcall.MaxPrograms)
	}
}

func TestSubprogramsAndBigStack(t *testing.T) {
	f := newFixture(t, hookCases[0])
	if err := f.b.MixedCallsSupported(); err != nil {
		t.Fatalf("this kernel should allow tail calls with bpf-to-bpf calls: %v", err)
	}
	edge := chaintest.Object(t, "edge")
	edgeMaps := chaintest.NewMaps(t, edge)
	sub := chaintest.Component{Obj: edge, Name: "sub", Function: "xdp_subprog", Priority: 2, Maps: edgeMaps}
	big := chaintest.Component{Obj: edge, Name: "big", Function: "xdp_bigstack", Priority: 3, Maps: edgeMaps}
	f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), sub, big, f.comp("B", 4)))
	checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("AB", 10))
	if hits := chaintest.Count(t, edgeMaps["hits"]); hits < 10 {
		t.Errorf("subprogram counted %d hits, want >= 10", hits)
	}
}

func TestSupports(t *testing.T) {
	b := tailcall.New()
	for _, h := range bpf.Hooks {
		if err := b.Supports(h); err != nil {
			t.Errorf("Supports(%s): %v", h, err)
		}
	}
	if err := b.Supports("nope"); err == nil {
		t.Error("Supports of an unknown hook succeeded")
	}
}

// TestSamplePrograms chains the sample marketplace programs, unchanged
// objects without any chaining code: a counter, a port filter and a tag.
func TestSamplePrograms(t *testing.T) {
	f := newFixture(t, hookCases[0])
	count := chaintest.Sample(t, "xdp_count", 10, nil)
	filter := chaintest.Sample(t, "xdp_portfilter", 20, map[string]string{"port": fmt.Sprint(chaintest.Port)})
	f.Apply(t, f.b, chaintest.Build(t, count, filter, f.comp("A", 30)))
	checkTraces(t, f.Traces(t, 20, 0), map[string]int{})
	const udp = 17
	if n := chaintest.PerCPUPackets(t, count.Maps["counters"], udp); n < 20 {
		t.Errorf("xdp_count counted %d UDP packets, want >= 20", n)
	}
	if n := chaintest.PerCPUPackets(t, filter.Maps["drops"], 0); n != 20 {
		t.Errorf("xdp_portfilter dropped %d, want 20", n)
	}
	if n := f.count(t, "A"); n != 0 {
		t.Errorf("the program after the filter saw %d packets, want 0", n)
	}

	// The filter on another port lets the traffic through to A.
	filter.Params = map[string]string{"port": "9"}
	f.Apply(t, f.b, chaintest.Build(t, count, filter, f.comp("A", 30)))
	checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("A", 20))
	if n := chaintest.PerCPUPackets(t, count.Maps["counters"], udp); n < 40 {
		t.Errorf("xdp_count counted %d UDP packets, want >= 40 (state kept)", n)
	}
}

func TestMain(m *testing.M) {
	chaintest.MaybeCrashChild(func(variant string) chaintest.Backend {
		if variant == "classic" {
			return tailcall.NewClassicTC()
		}
		return tailcall.New()
	})
	os.Exit(m.Run())
}

// TestKilledMidChange kills processes that keep changing the chain at
// random moments: the hook always runs one complete chain, and the next
// change leaves exactly one generation pinned.
func TestKilledMidChange(t *testing.T) {
	forEachHook(t, func(t *testing.T, hc hookCase) {
		f := newFixture(t, hc)
		variant := ""
		if strings.HasSuffix(hc.name, "classic-root") {
			variant = "classic"
		}
		chaintest.Crash(t, f.Env, f.b, variant, 15)
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("AB", 10))
		gens, _ := filepath.Glob(filepath.Join(tailcall.Dir(f.Target), "gen-*"))
		if len(gens) != 1 {
			t.Errorf("generations pinned after the crashes: %v, want one", gens)
		}
	})
}

// TestMixedCallsRefused: on a kernel that refuses tail calls from programs
// with bpf-to-bpf calls, such a program is refused before anything loads,
// with a message that says why; programs without calls still chain.
func TestMixedCallsRefused(t *testing.T) {
	f := newFixture(t, hookCases[0])
	f.b = tailcall.NewWithoutMixedCalls()
	sub := testprogComponent(t, "xdp_subprog")
	_, err := f.TryApply(f.b, chaintest.Build(t, f.comp("A", 1), sub), bpf.PrepareOptions{})
	if !errors.Is(err, tailcall.ErrMixedCalls) || !strings.Contains(err.Error(), "bpf-to-bpf") || !strings.Contains(err.Error(), "5.10") {
		t.Fatalf("Prepare: %v, want ErrMixedCalls explaining the 5.10 rule", err)
	}
	t.Logf("error: %v", err)
	if p := pins(t, f.Target.BPFFS); len(p) != 0 {
		t.Errorf("pins left: %v", p)
	}
	f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1)))
	checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("A", 10))
}

func testprogComponent(t *testing.T, name string) chaintest.Component {
	t.Helper()
	data, err := testprogs.Object(name)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := bpf.ParseObject(name, data)
	if err != nil {
		t.Fatal(err)
	}
	return chaintest.Component{Obj: obj, Name: name, Function: name, Priority: 50, Maps: chaintest.NewMaps(t, obj)}
}

// TestRemoveAfterTakeover: removing a chain whose XDP root another program
// has replaced only cleans kfm's pins and leaves that program alone.
func TestRemoveAfterTakeover(t *testing.T) {
	f := newFixture(t, hookCases[0])
	f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1)))
	c := f.Current(t, f.b)
	other := passProgram(t, ebpf.XDP)
	f.Do(t, func() error {
		root, err := ebpf.NewProgramFromID(c.RootID)
		if err != nil {
			return err
		}
		defer root.Close()
		return xdp.Replace(f.Target.Ifindex, other, root, xdp.ModeNative)
	})
	if c := f.Current(t, f.b); c != nil {
		t.Fatalf("Current after another program took the hook: %+v", c)
	}
	f.Apply(t, f.b, nil)
	if p := pins(t, f.Target.BPFFS); len(p) != 0 {
		t.Errorf("pins left: %v", p)
	}
	info, _ := other.Info()
	id, _ := info.ID()
	f.Do(t, func() error {
		a, err := xdp.Query(f.Target.Ifindex)
		if err == nil && a.ProgramID != id {
			t.Errorf("XDP hook runs %d, want the other program %d untouched", a.ProgramID, id)
		}
		if err == nil {
			err = xdp.Replace(f.Target.Ifindex, nil, other, xdp.ModeNative)
		}
		return err
	})
}
