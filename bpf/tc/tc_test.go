package tc_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/chaintest"
	"github.com/kfm-project/kfm/bpf/internal/clsact"
	"github.com/kfm-project/kfm/bpf/internal/load"
	"github.com/kfm-project/kfm/bpf/internal/pinmeta"
	"github.com/kfm-project/kfm/bpf/probe"
	"github.com/kfm-project/kfm/bpf/rewrite"
	"github.com/kfm-project/kfm/bpf/tc"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/testenv"
)

var (
	_ chain.Backend = (*tc.Backend)(nil)
	_ chain.Backend = tc.NewTCX()
)

type backendCase struct {
	name    string
	hook    bpf.Hook
	backend func() *tc.Backend
}

var cases = []backendCase{
	{"tcx/ingress", bpf.HookTCIngress, tc.NewTCX},
	{"tcx/egress", bpf.HookTCEgress, tc.NewTCX},
	{"tc/ingress", bpf.HookTCIngress, tc.NewTC},
	{"tc/egress", bpf.HookTCEgress, tc.NewTC},
}

func forEach(t *testing.T, fn func(t *testing.T, bc backendCase)) {
	for _, bc := range cases {
		t.Run(bc.name, func(t *testing.T) { fn(t, bc) })
	}
}

type fixture struct {
	*chaintest.Env
	b    *tc.Backend
	obj  *bpf.Object
	maps map[string]map[string]*ebpf.Map
}

func newFixture(t testing.TB, bc backendCase) *fixture {
	b := bc.backend()
	if b.Name() == tc.NameTCX && !chaintest.KernelAtLeast(t, 6, 6) {
		// TestSupports checks that tcx says so on these kernels.
		t.Skip("TCX needs Linux 6.6")
	}
	f := &fixture{Env: chaintest.NewEnv(t, bc.hook), b: b, obj: chaintest.Object(t, "tag")}
	if err := f.b.Supports(bc.hook); err != nil {
		t.Fatalf("Supports(%s): %v", bc.hook, err)
	}
	f.maps = map[string]map[string]*ebpf.Map{}
	for _, n := range []string{"A", "B", "C", "D", "E"} {
		f.maps[n] = chaintest.NewMaps(t, f.obj)
	}
	t.Cleanup(func() { f.TryApply(f.b, nil, bpf.PrepareOptions{}) })
	return f
}

func (f *fixture) comp(name string, prio int, params ...string) chaintest.Component {
	p := map[string]string{"tag": fmt.Sprint(int(name[0]))}
	for i := 0; i+1 < len(params); i += 2 {
		p[params[i]] = params[i+1]
	}
	return chaintest.Component{Obj: f.obj, Name: name, Function: "tc_tag", Priority: prio, Params: p, Maps: f.maps[name]}
}

func (f *fixture) count(t *testing.T, name string) uint64 {
	return chaintest.Count(t, f.maps[name]["count"])
}

func checkTraces(t *testing.T, got, want map[string]int) {
	t.Helper()
	if chaintest.FormatTraces(got) != chaintest.FormatTraces(want) {
		t.Errorf("traces %s, want %s", chaintest.FormatTraces(got), chaintest.FormatTraces(want))
	}
}

func checkCurrent(t *testing.T, f *fixture, want []bpf.ChainProgram) *bpf.Chain {
	t.Helper()
	c := f.Current(t, f.b)
	if c == nil {
		t.Fatal("Current: no chain")
	}
	if c.Backend != f.b.Name() {
		t.Errorf("Current: backend %q", c.Backend)
	}
	if g := gateID(t, f); g == "" || fmt.Sprint(c.RootID) != g {
		t.Errorf("Current: root id %d, want the gate's, %q", c.RootID, g)
	}
	if len(c.Programs) != len(want) {
		t.Fatalf("Current: %d programs %+v, want %d", len(c.Programs), c.Programs, len(want))
	}
	for i, p := range c.Programs {
		w := want[i]
		if p.Name != w.Name || p.Priority != w.Priority || p.ID != w.ID || p.ID == 0 || p.Tag == "" || !slices.Equal(p.ProceedOn, w.ProceedOn) {
			t.Errorf("Current program %d = %+v, want %+v", i, p, w)
		}
	}
	return c
}

func ids(ps []bpf.ChainProgram) []ebpf.ProgramID {
	var out []ebpf.ProgramID
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

// hookPrograms lists what the hook runs, in order: TCX programs as
// "tcx:name:id/link<id>", cls_bpf filters as "tc:prio:id:filter name".
func hookPrograms(t *testing.T, f *fixture) []string {
	t.Helper()
	var out []string
	f.Do(t, func() error {
		attach := ebpf.AttachTCXIngress
		if f.Target.Hook == bpf.HookTCEgress {
			attach = ebpf.AttachTCXEgress
		}
		if probe.TCX() == nil {
			res, err := link.QueryPrograms(link.QueryOptions{Target: f.Target.Ifindex, Attach: attach})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				lid, _ := p.LinkID()
				name := "?"
				if prog, err := ebpf.NewProgramFromID(p.ID); err == nil {
					if info, err := prog.Info(); err == nil {
						name = info.Name
					}
					prog.Close()
				}
				out = append(out, fmt.Sprintf("tcx:%s:%d/link%d", name, p.ID, lid))
			}
		}
		fs, err := clsact.List(f.Target.Ifindex, f.Target.Hook)
		if err != nil {
			return err
		}
		for _, fl := range fs {
			out = append(out, fmt.Sprintf("tc:%d:%d:%s", fl.Priority, fl.ProgramID, fl.Name))
		}
		return nil
	})
	return out
}

func isGate(s string) bool {
	return strings.HasPrefix(s, "tcx:"+tc.GateProgramName+":") || strings.HasSuffix(s, ":"+tc.GateFilterName)
}

// chainOnHook is hookPrograms with kfm's gate checked and left out: when
// the hook runs kfm programs (other than foreign), there is exactly one
// gate and it comes before all of them.
func chainOnHook(t *testing.T, f *fixture, foreign int) []string {
	t.Helper()
	all := hookPrograms(t, f)
	var out []string
	gates := 0
	for _, s := range all {
		if isGate(s) {
			gates++
			if len(out) > 0 && !strings.Contains(out[len(out)-1], "someone-else") {
				t.Errorf("hook runs %v: kfm's gate after a program of kfm's", all)
			}
			continue
		}
		out = append(out, s)
	}
	if want := map[bool]int{true: 1, false: 0}[len(out) > foreign]; gates != want {
		t.Errorf("hook runs %v: %d gates, want %d", all, gates, want)
	}
	return out
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

func TestRunOrderAndReorder(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		if c := f.Current(t, f.b); c != nil {
			t.Fatalf("Current before install: %+v", c)
		}
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 10), f.comp("B", 20), f.comp("C", 30)))
		for _, p := range progs {
			if !slices.Equal(p.ProceedOn, bpf.Actions{bpf.TCOK}) {
				t.Errorf("proceed-on %v, want the default [ok]", p.ProceedOn)
			}
		}
		checkCurrent(t, f, progs)
		if n := len(chainOnHook(t, f, 0)); n != 3 {
			t.Errorf("hook runs %d programs, want 3", n)
		}
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("ABC", 20))

		// Move C to the front: A and B run unchanged (same programs).
		progs2 := f.Apply(t, f.b, chaintest.Build(t, f.comp("C", 5), f.comp("A", 10), f.comp("B", 20)))
		checkCurrent(t, f, progs2)
		if progs2[1].ID != progs[0].ID || progs2[2].ID != progs[1].ID || progs2[0].ID == progs[2].ID {
			t.Errorf("program ids %v -> %v: want A and B kept, C reloaded", ids(progs), ids(progs2))
		}
		if n := len(chainOnHook(t, f, 0)); n != 3 {
			t.Errorf("hook runs %v, want 3 programs", hookPrograms(t, f))
		}
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("CAB", 20))
		for _, n := range []string{"A", "B", "C"} {
			if got := f.count(t, n); got != 40 {
				t.Errorf("%s counted %d, want 40 (state kept)", n, got)
			}
		}

		// Reverse, insert in the middle, remove.
		for _, step := range []struct {
			comps []chaintest.Component
			trace string
		}{
			{[]chaintest.Component{f.comp("B", 1), f.comp("A", 2), f.comp("C", 3)}, "BAC"},
			{[]chaintest.Component{f.comp("B", 1), f.comp("D", 2), f.comp("E", 3), f.comp("A", 4), f.comp("C", 5)}, "BDEAC"},
			{[]chaintest.Component{f.comp("D", 2), f.comp("C", 5)}, "DC"},
			{[]chaintest.Component{f.comp("E", 1), f.comp("C", 5), f.comp("D", 6)}, "ECD"},
		} {
			progs := f.Apply(t, f.b, chaintest.Build(t, step.comps...))
			checkCurrent(t, f, progs)
			if got := chainOnHook(t, f, 0); len(got) != len(step.comps) {
				t.Errorf("%s: hook runs %v", step.trace, got)
			}
			checkTraces(t, f.Traces(t, 10, 10), chaintest.Only(step.trace, 10))
		}
	})
}

func TestProceedOn(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		shot := fmt.Sprint(int(bpf.TCShot))
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2, "verdict", shot), f.comp("C", 3)))
		checkTraces(t, f.Traces(t, 20, 0), map[string]int{})
		if a, b, c := f.count(t, "A"), f.count(t, "B"), f.count(t, "C"); a != 20 || b != 20 || c != 0 {
			t.Errorf("counts A=%d B=%d C=%d, want 20 20 0", a, b, c)
		}
		cb := f.comp("B", 2, "verdict", shot)
		cb.ProceedOn = bpf.Actions{bpf.TCShot, bpf.TCOK}
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), cb, f.comp("C", 3)))
		c := checkCurrent(t, f, progs)
		if !slices.Equal(c.Programs[1].ProceedOn, bpf.Actions{bpf.TCOK, bpf.TCShot}) {
			t.Errorf("Current proceed-on of B: %v", c.Programs[1].ProceedOn)
		}
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("ABC", 20))
		// The last program proceeds too: the packet goes on to the
		// stack as a pass.
		if last := f.count(t, "C"); last != 20 {
			t.Errorf("C counted %d, want 20", last)
		}
	})
}

// skb is struct __sk_buff up to cb[]: BPF_PROG_TEST_RUN takes a shorter
// context and zeroes the rest.
type skb struct {
	Before [12]uint32
	CB     [5]uint32
}

// runWithCB runs p on pkt with skb->cb[tc.GateCB] = word and returns the
// verdict and the word as p left it.
func runWithCB(t *testing.T, p *ebpf.Program, pkt []byte, word uint32) (uint32, uint32) {
	t.Helper()
	var in skb
	in.CB[tc.GateCB] = word
	// The kernel writes its whole struct __sk_buff back (192 bytes on
	// 6.x): leave room.
	var out struct {
		skb
		Rest [64]uint32
	}
	ret, err := p.Run(&ebpf.RunOptions{Data: pkt, Context: in, ContextOut: &out})
	if err != nil {
		t.Fatal(err)
	}
	return ret, out.CB[tc.GateCB]
}

// TestVerdictMapping runs the gate and the rewritten programs with
// BPF_PROG_TEST_RUN: the gate writes one bit per program into
// skb->cb[GateCB] and continues (-1); a program whose bit is set maps its
// proceed-on verdict to -1 (4294967295) and returns others unchanged; a
// program whose bit is clear returns -1 whatever its code would do.
func TestVerdictMapping(t *testing.T) {
	f := newFixture(t, cases[2])
	progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2, "verdict", fmt.Sprint(int(bpf.TCShot)))))
	pkt := testPacket()
	var gate *ebpf.Program
	f.Do(t, func() error {
		fs, err := clsact.List(f.Target.Ifindex, f.Target.Hook)
		if err != nil {
			return err
		}
		for _, fl := range fs {
			if fl.Priority == tc.GatePriority && fl.Name == tc.GateFilterName {
				gate, err = ebpf.NewProgramFromID(fl.ProgramID)
				return err
			}
		}
		return errors.New("no gate filter")
	})
	defer gate.Close()
	ret, mask := runWithCB(t, gate, pkt, 0xdead0000)
	if ret != 4294967295 || bits.OnesCount32(mask) != 2 {
		t.Fatalf("the gate returned %d and wrote %#x: want -1 and two bits", ret, mask)
	}
	var seen uint32
	for i, want := range []uint32{4294967295, uint32(bpf.TCShot)} {
		p, err := ebpf.NewProgramFromID(progs[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if ret, _ := runWithCB(t, p, pkt, mask); ret != want {
			t.Errorf("program %d returned %d with the gate's word, want %d", i, ret, want)
		}
		if ret, _ := runWithCB(t, p, pkt, 0); ret != 4294967295 {
			t.Errorf("program %d returned %d with no bit set, want -1", i, ret)
		}
		// The program runs (counts the packet) for its own bit only.
		name := []string{"A", "B"}[i]
		var runs uint32
		for b := uint32(1); b != 0; b <<= 1 {
			before := f.count(t, name)
			runWithCB(t, p, pkt, b)
			if f.count(t, name) != before {
				runs |= b
			}
		}
		if bits.OnesCount32(runs) != 1 || runs&mask == 0 || runs&seen != 0 {
			t.Errorf("program %s runs with gate bits %#x; want one bit of the gate's %#x, not another program's (%#x)", name, runs, mask, seen)
		}
		seen |= runs
	}
}

// testPacket is an Ethernet/IPv4/UDP datagram to chaintest.Port with an
// empty trace.
func testPacket() []byte {
	pkt := make([]byte, 14+20+8+chaintest.TraceLen+8)
	pkt[12], pkt[13] = 0x08, 0x00
	ip := pkt[14:]
	ip[0], ip[9] = 0x45, 17
	total := len(pkt) - 14
	ip[2], ip[3] = byte(total>>8), byte(total)
	udp := ip[20:]
	udp[2], udp[3] = byte(chaintest.Port>>8), byte(chaintest.Port&0xff)
	l := len(udp)
	udp[4], udp[5] = byte(l>>8), byte(l)
	return pkt
}

// TestSwapUnderTraffic changes a chain 50 times under a flood of
// datagrams, back and forth between two chains: every datagram arrives,
// and each program that is in both chains counts each datagram exactly
// once. The old and the new programs are attached together while a change
// runs; the gate lets every packet run either the old chain or the new one,
// never parts of both.
func TestSwapUnderTraffic(t *testing.T) {
	scenarios := []struct {
		name      string
		even, odd func(f *fixture) []chaintest.Component
	}{
		{"reorder", func(f *fixture) []chaintest.Component {
			return []chaintest.Component{f.comp("A", 1), f.comp("B", 2)}
		}, func(f *fixture) []chaintest.Component {
			return []chaintest.Component{f.comp("B", 1), f.comp("A", 2)}
		}},
		// C moves, B is upgraded (another tag: another program), and D
		// comes and goes: A, B and C count every packet once.
		{"move, upgrade, insert and remove", func(f *fixture) []chaintest.Component {
			return []chaintest.Component{f.comp("A", 1), f.comp("B", 2), f.comp("C", 3)}
		}, func(f *fixture) []chaintest.Component {
			return []chaintest.Component{f.comp("C", 1), f.comp("D", 2), f.comp("A", 3), f.comp("B", 4, "tag", "98")}
		}},
	}
	forEach(t, func(t *testing.T, bc backendCase) {
		for _, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				f := newFixture(t, bc)
				f.Apply(t, f.b, chaintest.Build(t, sc.even(f)...))
				ctx, cancel := context.WithCancel(context.Background())
				flood := chaintest.StartFlood(t, ctx, f.Pair.A, f.Dst, 10)
				const changes = 50
				start := time.Now()
				for i := 0; i < changes; i++ {
					time.Sleep(2 * time.Millisecond) // traffic between changes too
					if i%2 == 0 {
						f.Apply(t, f.b, chaintest.Build(t, sc.odd(f)...))
					} else {
						f.Apply(t, f.b, chaintest.Build(t, sc.even(f)...))
					}
				}
				elapsed := time.Since(start)
				time.Sleep(20 * time.Millisecond)
				cancel()
				sent, err := flood.Wait()
				if err != nil {
					t.Fatal(err)
				}
				got := f.Recv.WaitFor(int(sent), 5*time.Second)
				counts := map[string]uint64{}
				for _, c := range sc.even(f) {
					counts[c.Name] = f.count(t, c.Name)
				}
				if drops := f.Recv.SocketDrops(t); drops > 0 {
					t.Errorf("the receiving socket dropped %d datagrams (queue full): the test cannot tell what the chain did with them", drops)
				}
				t.Logf("%s: %d changes in %v under traffic: sent %d, received %d, counted %v",
					bc.name, changes, elapsed.Round(time.Millisecond), sent, got, counts)
				if sent < 20*changes {
					t.Errorf("only %d datagrams sent", sent)
				}
				if uint64(got) != sent {
					t.Errorf("sent %d, received %d: packets lost", sent, got)
				}
				// Every packet ran the whole old chain or the whole new
				// one: each program of both exactly once.
				for name, n := range counts {
					if n != sent {
						t.Errorf("%s counted %d of %d packets: want each exactly once (%+d)", name, n, sent, int64(n)-int64(sent))
					}
				}
				if hp := chainOnHook(t, f, 0); len(hp) != len(sc.even(f)) {
					t.Errorf("hook runs %v after the changes, want %d programs", hookPrograms(t, f), len(sc.even(f)))
				}
			})
		}
	})
}

// TestReplaceInPlace: a program whose parameters change at the same place
// is swapped in place (same link or filter), atomically: under traffic
// nothing is lost, skipped or counted twice.
func TestReplaceInPlace(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2), f.comp("C", 3)))
		before := hookPrograms(t, f)
		ctx, cancel := context.WithCancel(context.Background())
		flood := chaintest.StartFlood(t, ctx, f.Pair.A, f.Dst, 10)
		const changes = 50
		for i := 0; i < changes; i++ {
			f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2, "port", fmt.Sprint(chaintest.Port+i%2)), f.comp("C", 3)))
		}
		time.Sleep(20 * time.Millisecond)
		cancel()
		sent, _ := flood.Wait()
		got := f.Recv.WaitFor(int(sent), 5*time.Second)
		a, b, c := f.count(t, "A"), f.count(t, "B"), f.count(t, "C")
		if drops := f.Recv.SocketDrops(t); drops > 0 {
			t.Errorf("the receiving socket dropped %d datagrams (queue full)", drops)
		}
		t.Logf("%s: %d in-place upgrades under traffic: sent %d, received %d, counted A %d B %d C %d", bc.name, changes, sent, got, a, b, c)
		// B counts only packets to its port, which alternates between the
		// stream's port and another one.
		if uint64(got) != sent || a != sent || c != sent || b == 0 || b >= sent {
			t.Errorf("sent %d, received %d, A %d, B %d, C %d: want A = C = received = sent, 0 < B < sent", sent, got, a, b, c)
		}
		// Gate, A, B, C: only B's program changes (an upgrade in place
		// needs no switch of the gate).
		after := hookPrograms(t, f)
		if len(after) != 4 || !isGate(after[0]) || after[0] != before[0] || after[1] != before[1] || after[3] != before[3] || after[2] == before[2] {
			t.Errorf("hook before %v, after %v: only B's program should change", before, after)
		}
		after, before = after[1:], before[1:]
		// Same link (tcx) or priority (tc) for B.
		place := func(s string) string {
			if strings.HasPrefix(s, "tcx:") {
				return s[strings.Index(s, "/"):]
			}
			return strings.SplitN(s, ":", 3)[1]
		}
		if place(after[1]) != place(before[1]) {
			t.Errorf("B moved from %s to %s: want an in-place replacement", before[1], after[1])
		}
	})
}

func TestLoadFailureLeavesChain(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		beforePins, beforeHook := pins(t, f.Target.BPFFS), hookPrograms(t, f)
		fail := chaintest.Component{Obj: chaintest.Object(t, "edge"), Name: "broken", Function: "tc_fail", Priority: 3}
		_, err := f.TryApply(f.b, chaintest.Build(t, f.comp("B", 1), f.comp("A", 2), fail), bpf.PrepareOptions{})
		if !errors.Is(err, bpf.ErrLoad) || !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "verifier log") {
			t.Fatalf("Prepare with a broken program: %v", err)
		}
		if p := pins(t, f.Target.BPFFS); !slices.Equal(p, beforePins) {
			t.Errorf("pins changed: %v -> %v", beforePins, p)
		}
		if h := hookPrograms(t, f); !slices.Equal(h, beforeHook) {
			t.Errorf("hook changed: %v -> %v", beforeHook, h)
		}
		checkCurrent(t, f, progs)
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("AB", 10))
	})
}

// gateID returns the program ID of kfm's gate on the hook ("" if none).
func gateID(t *testing.T, f *fixture) string {
	t.Helper()
	for _, s := range hookPrograms(t, f) {
		if isGate(s) {
			if strings.HasPrefix(s, "tcx:") {
				return strings.Split(strings.Split(s, ":")[2], "/")[0]
			}
			return strings.Split(s, ":")[2]
		}
	}
	return ""
}

func TestRevert(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2), f.comp("C", 3)))
		gate := gateID(t, f)
		for _, next := range [][]chaintest.Component{
			{f.comp("C", 1), f.comp("D", 2), f.comp("A", 3)},
			{f.comp("A", 1), f.comp("B", 2, "port", "9"), f.comp("C", 3)},
			nil,
		} {
			f.Do(t, func() error {
				ctx := context.Background()
				ch, err := f.b.Prepare(ctx, f.Target, chaintest.Build(t, next...), bpf.PrepareOptions{})
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
			checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("ABC", 10))
			if h := chainOnHook(t, f, 0); len(h) != 3 {
				t.Errorf("hook runs %v after revert", h)
			}
			if g := gateID(t, f); g != gate {
				t.Errorf("gate program %s after revert, want the old one, %s", g, gate)
			}
		}
	})
}

// TestFirstInstallRevert: reverting the first chain on a hook leaves
// nothing of kfm's, gate included.
func TestFirstInstallRevert(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		f.Do(t, func() error {
			ctx := context.Background()
			ch, err := f.b.Prepare(ctx, f.Target, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)), bpf.PrepareOptions{})
			if err != nil {
				return err
			}
			defer ch.Close()
			if err := ch.Commit(ctx); err != nil {
				return err
			}
			if n := len(hookPrograms(t, f)); n != 3 {
				t.Errorf("hook runs %d programs after Commit, want the gate and 2", n)
			}
			return ch.Revert(ctx)
		})
		checkClean(t, f, 0)
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("", 10))
	})
}

func checkClean(t *testing.T, f *fixture, foreign int) {
	t.Helper()
	if p := pins(t, f.Target.BPFFS); len(p) != 0 {
		t.Errorf("pins left: %v", p)
	}
	if h := chainOnHook(t, f, foreign); len(h) != foreign {
		t.Errorf("hook runs %v, want %d foreign programs only", hookPrograms(t, f), foreign)
	}
	if c := f.Current(t, f.b); c != nil {
		t.Errorf("Current after removal: %+v", c)
	}
}

func TestRemoveAndRelease(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		f.Apply(t, f.b, nil)
		checkClean(t, f, 0)
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("", 10))

		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		f.Do(t, func() error { return f.b.Release(context.Background(), f.Target) })
		checkClean(t, f, 0)
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("", 10))
	})
}

// foreignProgram attaches, outside kfm, a TC program that counts into a
// fresh array map and returns verdict.
func foreignProgram(t *testing.T, f *fixture, tcx bool, verdict int32) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			// Count only the test datagrams (66 bytes with the Ethernet
			// header): the veth also carries IPv6 neighbour discovery.
			asm.Mov.Imm(asm.R0, verdict),
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
			asm.JNE.Imm(asm.R2, int32(len(testPacket())), "out"),
			asm.LoadMapValue(asm.R1, m.FD(), 0),
			asm.Mov.Imm(asm.R2, 1),
			asm.StoreXAdd(asm.R1, asm.R2, asm.DWord),
			asm.Mov.Imm(asm.R0, verdict),
			asm.Return().WithSymbol("out"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	f.Do(t, func() error {
		if tcx {
			attach := ebpf.AttachTCXIngress
			if f.Target.Hook == bpf.HookTCEgress {
				attach = ebpf.AttachTCXEgress
			}
			l, err := link.AttachTCX(link.TCXOptions{Interface: f.Target.Ifindex, Program: prog, Attach: attach, Anchor: link.Tail()})
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
			return nil
		}
		if err := clsact.Ensure(f.Target.Ifindex); err != nil {
			return err
		}
		return clsact.Add(f.Target.Ifindex, f.Target.Hook, 0xc000, 1, prog, "someone-else")
	})
	return m
}

// TestCoexistence: kfm's chain runs before a program another tool attached
// afterwards; kfm's last "continue" (-1) lets it run; kfm never touches it.
func TestCoexistence(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		other := foreignProgram(t, f, bc.name[:3] == "tcx", int32(bpf.TCOK))
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("AB", 10))
		if n := chaintest.Count(t, other); n != 10 {
			t.Errorf("the other program counted %d, want 10: kfm's last program must continue (-1)", n)
		}
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("B", 1), f.comp("C", 2), f.comp("A", 3)))
		if c := checkCurrent(t, f, progs); len(c.Programs) != 3 {
			t.Errorf("Current lists %d programs, want kfm's 3 only", len(c.Programs))
		}
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("BCA", 10))
		if n := chaintest.Count(t, other); n != 20 {
			t.Errorf("the other program counted %d, want 20", n)
		}
		f.Apply(t, f.b, nil)
		checkClean(t, f, 1)
	})
}

func TestLeftoversFromACrash(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1)))
		dir := f.b.Dir(f.Target)
		// A dead run's leftovers: a pinned TCX link that no longer runs,
		// or a kfm filter nothing describes.
		foreignProgram(t, f, false, -1)
		if bc.name[:3] == "tcx" {
			f.Do(t, func() error {
				prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
				if err != nil {
					return err
				}
				defer prog.Close()
				attach := ebpf.AttachTCXIngress
				if f.Target.Hook == bpf.HookTCEgress {
					attach = ebpf.AttachTCXEgress
				}
				l, err := link.AttachTCX(link.TCXOptions{Interface: f.Target.Ifindex, Program: prog, Attach: attach})
				if err != nil {
					return err
				}
				defer l.Close()
				info, _ := l.Info()
				if err := l.Pin(filepath.Join(dir, fmt.Sprintf("link-%d", info.ID))); err != nil {
					return err
				}
				return l.Detach()
			})
		} else {
			f.Do(t, func() error {
				prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
				if err != nil {
					return err
				}
				defer prog.Close()
				return clsact.Add(f.Target.Ifindex, f.Target.Hook, tc.MinPriority+7, tc.FilterHandle, prog, tc.FilterNamePrefix+"ghost")
			})
		}
		if c := f.Current(t, f.b); c == nil || len(c.Programs) != 1 {
			t.Fatalf("Current with leftovers: %+v", c)
		}
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		// Left: kfm's gate and two programs, and the foreign cls_bpf
		// filter.
		if h := chainOnHook(t, f, 1); len(h) != 3 {
			t.Errorf("hook runs %v", hookPrograms(t, f))
		}
		p := pins(t, f.Target.BPFFS)
		links := 0
		for _, s := range p {
			if strings.Contains(s, "link-") {
				links++
			}
		}
		if want := map[bool]int{true: 2, false: 0}[bc.name[:3] == "tcx"]; links != want {
			t.Errorf("pinned links %v, want %d", p, want)
		}
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("AB", 10))
	})
}

// TestPriorityRoom: classic tc inserts between neighbours by halving the
// gap; when no priority is left it rebuilds the chain at fresh priorities.
func TestPriorityRoom(t *testing.T) {
	f := newFixture(t, cases[2])
	names := []string{"A", "B"}
	for i := 0; i < 12; i++ {
		// Insert a new program right after A every time.
		n := fmt.Sprintf("X%d", i)
		f.maps[n] = chaintest.NewMaps(t, f.obj)
		names = slices.Insert(names, 1, n)
		var comps []chaintest.Component
		trace := ""
		for j, name := range names {
			comps = append(comps, chaintest.Component{Obj: f.obj, Name: name, Function: "tc_tag", Priority: j,
				Params: map[string]string{"tag": fmt.Sprint(int('a' + j))}, Maps: f.maps[name]})
			trace += string(rune('a' + j))
		}
		progs := f.Apply(t, f.b, chaintest.Build(t, comps...))
		checkCurrent(t, f, progs)
		checkTraces(t, f.Traces(t, 5, 5), chaintest.Only(trace, 5))
	}
	t.Logf("filters after 12 inserts: %v", hookPrograms(t, f))
}

func TestSupports(t *testing.T) {
	testenv.RequirePrivileged(t)
	tcx := chaintest.KernelAtLeast(t, 6, 6)
	for _, b := range []*tc.Backend{tc.NewTCX(), tc.NewTC()} {
		if err := b.Supports(bpf.HookXDP); !errors.Is(err, tc.ErrNotTC) {
			t.Errorf("%s.Supports(xdp): %v", b.Name(), err)
		}
		for _, h := range []bpf.Hook{bpf.HookTCIngress, bpf.HookTCEgress} {
			err := b.Supports(h)
			switch {
			case b.Name() == tc.NameTC || tcx:
				if err != nil {
					t.Errorf("%s.Supports(%s): %v", b.Name(), h, err)
				}
			case !errors.Is(err, bpf.ErrUnsupportedKernel) || err.Error() != "TCX links: not supported by this kernel":
				t.Errorf("%s.Supports(%s) before Linux 6.6: %v, want \"TCX links: not supported by this kernel\"", b.Name(), h, err)
			}
		}
	}
}

// TestSamplePrograms chains the sample marketplace programs tc_count and
// tc_mark (which return TC_ACT_OK and know nothing of chains) before a tag
// program: all of them run for every packet.
func TestSamplePrograms(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		count := chaintest.Sample(t, "tc_count", 10, nil)
		mark := chaintest.Sample(t, "tc_mark", 20, map[string]string{"mark": "7"})
		f.Apply(t, f.b, chaintest.Build(t, count, mark, f.comp("A", 30)))
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("A", 20))
		if n := chaintest.PerCPUPackets(t, count.Maps["totals"], 0); n < 20 {
			t.Errorf("tc_count counted %d, want >= 20", n)
		}
	})
}

func TestMain(m *testing.M) {
	chaintest.MaybeCrashChild(func(name string) chaintest.Backend {
		if name == tc.NameTCX {
			return tc.NewTCX()
		}
		return tc.NewTC()
	})
	os.Exit(m.Run())
}

// TestKilledMidChange kills processes that keep reordering the chain at
// random moments: after every kill the hook runs one complete chain (the
// old or the new one), Current lists exactly it, and the next change
// converges to exactly the chain asked for, with the programs the killed
// runs left attached behind the gate removed.
func TestKilledMidChange(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		chaintest.Crash(t, f.Env, f.b, f.b.Name(), 15)
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
		checkCurrent(t, f, progs)
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("AB", 10))
		if h := chainOnHook(t, f, 0); len(h) != 2 {
			t.Errorf("hook runs %v after the crashes and a change, want 2 programs", hookPrograms(t, f))
		}
		links := 0
		for _, p := range pins(t, f.Target.BPFFS) {
			if strings.Contains(p, "link-") {
				links++
			}
		}
		if want := map[bool]int{true: 2, false: 0}[bc.name[:3] == "tcx"]; links != want {
			t.Errorf("%d link pins after the crashes, want %d", links, want)
		}
	})
}

func TestUnsupportedMessage(t *testing.T) {
	// The probe's own words, and a match for bpf.ErrUnsupportedKernel, as
	// kfm status shows them; checked on the error type since TCX exists
	// here.
	err := tc.UnsupportedForTest(errors.New("TCX links: not supported by this kernel"))
	if err.Error() != "TCX links: not supported by this kernel" || !errors.Is(err, bpf.ErrUnsupportedKernel) {
		t.Errorf("%q (Is ErrUnsupportedKernel: %v)", err, errors.Is(err, bpf.ErrUnsupportedKernel))
	}
}

// TestGateLost: someone removes kfm's gate (or its description) by hand.
// kfm's programs then read whatever skb->cb[4] holds, so none of them
// counts as running: Current says no chain, and the next change removes
// them and builds the chain anew behind a new gate.
func TestGateLost(t *testing.T) {
	losses := []struct {
		name string
		do   func(t *testing.T, f *fixture)
	}{
		{"gate detached", func(t *testing.T, f *fixture) {
			f.Do(t, func() error {
				if f.b.Name() == tc.NameTC {
					return clsact.Delete(f.Target.Ifindex, f.Target.Hook, tc.GatePriority, tc.FilterHandle)
				}
				l, err := link.LoadPinnedLink(filepath.Join(f.b.Dir(f.Target), "gate"), nil)
				if err != nil {
					return err
				}
				defer l.Close()
				return l.Detach()
			})
		}},
		{"description removed", func(t *testing.T, f *fixture) {
			if err := os.Remove(filepath.Join(f.b.Dir(f.Target), "meta")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	forEach(t, func(t *testing.T, bc backendCase) {
		for _, lose := range losses {
			t.Run(lose.name, func(t *testing.T) {
				f := newFixture(t, bc)
				f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)))
				lose.do(t, f)
				if c := f.Current(t, f.b); c != nil {
					t.Errorf("Current with the gate lost: %+v, want no chain", c)
				}
				progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("B", 1), f.comp("A", 2)))
				checkCurrent(t, f, progs)
				checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("BA", 10))
				if h := chainOnHook(t, f, 0); len(h) != 2 {
					t.Errorf("hook runs %v, want the gate and 2 programs", hookPrograms(t, f))
				}
				f.Apply(t, f.b, nil)
				checkClean(t, f, 0)
			})
		}
	})
}

// TestUngatedChain: a chain an older kfm installed (description version 1,
// programs rewritten by TCNext only) is read as it runs, and the next
// change replaces all of it by gated programs.
func TestUngatedChain(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		dir := f.b.Dir(f.Target)
		var programs []map[string]any
		f.Do(t, func() error {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			if bc.name[:3] == "tc/" {
				if err := clsact.Ensure(f.Target.Ifindex); err != nil {
					return err
				}
			}
			for i, c := range chaintest.Build(t, f.comp("A", 1), f.comp("B", 2)) {
				p, err := load.Component(c, f.Target.Hook, load.Options{Rewrite: func(insns asm.Instructions) (asm.Instructions, error) {
					return rewrite.TCNext(insns, []int32{int32(bpf.TCOK)})
				}})
				if err != nil {
					return err
				}
				defer p.Close()
				info, err := p.Info()
				if err != nil {
					return err
				}
				id, _ := info.ID()
				m := map[string]any{"name": c.Name, "function": c.Function, "priority": c.Priority, "proceedOn": []int{0}, "key": c.Key, "id": id, "tag": info.Tag}
				if bc.name[:3] == "tc/" {
					// An older kfm could reach the gate's priority.
					prio := uint16(tc.MinPriority + i)
					if err := clsact.Add(f.Target.Ifindex, f.Target.Hook, prio, tc.FilterHandle, p, tc.FilterNamePrefix+c.Name); err != nil {
						return err
					}
					m["tcPriority"] = prio
				} else {
					attach := ebpf.AttachTCXIngress
					if f.Target.Hook == bpf.HookTCEgress {
						attach = ebpf.AttachTCXEgress
					}
					l, err := link.AttachTCX(link.TCXOptions{Interface: f.Target.Ifindex, Program: p, Attach: attach, Anchor: link.Tail()})
					if err != nil {
						return err
					}
					defer l.Close()
					linfo, err := l.Info()
					if err != nil {
						return err
					}
					if err := l.Pin(filepath.Join(dir, fmt.Sprintf("link-%d", linfo.ID))); err != nil {
						return err
					}
					m["link"] = linfo.ID
				}
				programs = append(programs, m)
			}
			return pinmeta.Write(filepath.Join(dir, "meta"), map[string]any{
				"version": 1, "backend": f.b.Name(), "hook": f.Target.Hook, "ifindex": f.Target.Ifindex, "programs": programs,
			})
		})
		c := f.Current(t, f.b)
		if c == nil || len(c.Programs) != 2 {
			t.Fatalf("Current of the ungated chain: %+v", c)
		}
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("AB", 10))

		if bc.name[:3] == "tc/" {
			// A's filter sits where the gate goes: a clear error, and
			// nothing changes.
			before := hookPrograms(t, f)
			_, err := f.TryApply(f.b, chaintest.Build(t, f.comp("B", 1), f.comp("A", 2)), bpf.PrepareOptions{})
			if err == nil || !strings.Contains(err.Error(), "kfm:A") || !strings.Contains(err.Error(), "gate") {
				t.Fatalf("change with a filter at the gate's priority: %v", err)
			}
			if h := hookPrograms(t, f); !slices.Equal(h, before) {
				t.Errorf("hook changed: %v -> %v", before, h)
			}
			// Take A off by hand: the next change replaces B, which
			// runs ungated, by gated programs.
			f.Do(t, func() error {
				return clsact.Delete(f.Target.Ifindex, f.Target.Hook, tc.MinPriority, tc.FilterHandle)
			})
		}
		progs := f.Apply(t, f.b, chaintest.Build(t, f.comp("B", 1), f.comp("A", 2)))
		checkCurrent(t, f, progs)
		checkTraces(t, f.Traces(t, 10, 10), chaintest.Only("BA", 10))
		if h := chainOnHook(t, f, 0); len(h) != 2 {
			t.Errorf("hook runs %v, want the gate and 2 programs", hookPrograms(t, f))
		}
		if a, b := f.count(t, "A"), f.count(t, "B"); a != 20 || b != 20 {
			t.Errorf("A counted %d, B %d, want 20 each (state kept)", a, b)
		}
	})
}

// TestProgramWritingTheGateWord: a program that clears skb->cb[] for its
// own use, kfm's gate word included, does not stop the programs after it:
// kfm gives it the word back whenever it lets the packet go on.
func TestProgramWritingTheGateWord(t *testing.T) {
	forEach(t, func(t *testing.T, bc backendCase) {
		f := newFixture(t, bc)
		s := func(prio int) chaintest.Component {
			c := f.comp("S", prio)
			c.Function = "tc_scribble"
			return c
		}
		f.Apply(t, f.b, chaintest.Build(t, f.comp("A", 10), s(20), f.comp("B", 30)))
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("ASB", 20))
		f.Apply(t, f.b, chaintest.Build(t, s(5), f.comp("A", 10), f.comp("B", 30)))
		checkTraces(t, f.Traces(t, 20, 20), chaintest.Only("SAB", 20))
	})
}
