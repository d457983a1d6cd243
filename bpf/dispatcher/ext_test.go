package dispatcher

// Tests that need freplace (BPF_PROG_TYPE_EXT): they skip on the
// development hosts, whose sandbox refuses EXT programs, and run in the
// kernel VMs (make test-kernels: 5.10, 6.1, 6.12), where KFM_REQUIRE_EXT=1
// turns a skip into a failure. Traffic is real: UDP datagrams from
// namespace A through the veth pair into namespace B, whose XDP hook runs
// the chain.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/chaintest"
	"github.com/kfm-project/kfm/bpf/xdp"
	"github.com/kfm-project/kfm/internal/testenv"
)

const testPort = 4242

var (
	pass     = bpf.Actions{bpf.XDPPass}
	passDrop = bpf.Actions{bpf.XDPDrop, bpf.XDPPass}
)

func newEXTEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireEXT(t)
	e := newEnv(t)
	t.Cleanup(func() { e.detachAll(t) })
	return e
}

// comp is a component running function of testdata/progs.o with params,
// and the counter it counts in (handed over as a map replacement, like the
// chain layer's state maps).
func comp(t *testing.T, name, function string, prio int, proceed bpf.Actions, params map[string]string) (bpf.Component, counter) {
	t.Helper()
	spec, err := testObject(t, "progs.o").Spec(params)
	if err != nil {
		t.Fatal(err)
	}
	c := newCounter(t, spec)
	for fn := range spec.Programs {
		if fn != function {
			delete(spec.Programs, fn)
		}
	}
	return bpf.Component{
		Name: name, Priority: prio, ProceedOn: proceed,
		Spec: spec, Function: function, Key: name,
		Maps: map[string]*ebpf.Map{"counter": c.m},
	}, c
}

// keep is the component that keeps running program p.
func keep(p bpf.ChainProgram) bpf.Component {
	return bpf.Component{Name: p.Name, Priority: p.Priority, ProceedOn: p.ProceedOn, Running: p.ID}
}

// apply prepares and commits desired and returns what runs.
func (e *env) apply(t *testing.T, desired ...bpf.Component) []bpf.ChainProgram {
	t.Helper()
	ctx := context.Background()
	var ch bpf.Change
	e.in(t, func() (err error) {
		ch, err = e.b.Prepare(ctx, e.target, desired, bpf.PrepareOptions{})
		return err
	})
	defer ch.Close()
	e.in(t, func() error { return ch.Commit(ctx) })
	return ch.Programs()
}

func names(ps []bpf.ChainProgram) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// checkChain compares what Current reads with what a change reported, and
// checks that exactly one pin directory exists: the running dispatcher's,
// with a program and a link pin per slot.
func (e *env) checkChain(t *testing.T, want []bpf.ChainProgram) *bpf.Chain {
	t.Helper()
	c := e.current(t)
	if c == nil {
		t.Fatal("Current = nil, want a chain")
	}
	if len(c.Programs) != len(want) {
		t.Fatalf("Current lists %v, want %v", names(c.Programs), names(want))
	}
	for i := range want {
		g, w := c.Programs[i], want[i]
		if g.Name != w.Name || g.ID != w.ID || g.Priority != w.Priority || !slices.Equal(g.ProceedOn, w.ProceedOn) || g.Tag != w.Tag {
			t.Errorf("program %d: Current %+v, Prepare said %+v", i, g, w)
		}
	}
	dirs := e.pinDirs(t)
	wantDir := fmt.Sprintf("dispatch-%d-%d", e.target.Ifindex, c.RootID)
	if !slices.Equal(dirs, []string{wantDir}) {
		t.Errorf("pin directories %v, want [%s]", dirs, wantDir)
	}
	var wantPins []string
	for i := range want {
		wantPins = append(wantPins, fmt.Sprintf("prog%d-link", i), fmt.Sprintf("prog%d-prog", i))
	}
	slices.Sort(wantPins)
	if got := pinsIn(t, PinDir(e.target.BPFFS, e.target.Ifindex, c.RootID)); !slices.Equal(got, wantPins) {
		t.Errorf("pins %v, want %v", got, wantPins)
	}
	return c
}

// TestOrder: the chain runs in the order given. A program that drops before
// a counter: the counter sees nothing. Reordered: the counter sees
// everything, the dropper still drops.
func TestOrder(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	drop, drops := comp(t, "drop", "drop_udp", 10, pass, nil)
	cnt, counts := comp(t, "count", "count_udp_packets", 20, pass, nil)

	progs := e.apply(t, drop, cnt)
	e.checkChain(t, progs)
	tr.send(t, 100)
	if got := drops.waitFor(t, 100); got != 100 {
		t.Fatalf("the dropper saw %d of 100", got)
	}
	if got := counts.value(t); got != 0 {
		t.Errorf("the counter after the dropper saw %d packets, want 0", got)
	}
	if got := tr.recv.Count(); got != 0 {
		t.Errorf("%d datagrams arrived through a dropper", got)
	}

	// Counter first (a new priority), keeping both programs.
	c := e.current(t)
	k0, k1 := keep(c.Programs[1]), keep(c.Programs[0])
	k0.Priority = 5
	progs = e.apply(t, k0, k1)
	e.checkChain(t, progs)
	tr.send(t, 100)
	if got := drops.waitFor(t, 200); got != 200 {
		t.Fatalf("the dropper saw %d of 200", got)
	}
	if got := counts.value(t); got != 100 {
		t.Errorf("the counter before the dropper saw %d, want 100", got)
	}
}

// TestProceedOn: a verdict not in a program's proceed-on ends the chain
// with that verdict; listed, the next program runs and has the last word.
func TestProceedOn(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	dropper, first := comp(t, "dropper", "count_udp_packets", 10, pass, map[string]string{"verdict": "1"}) // XDP_DROP
	next, second := comp(t, "next", "count_udp_packets", 20, pass, nil)

	e.apply(t, dropper, next)
	tr.send(t, 50)
	first.waitFor(t, 50)
	if got := second.value(t); got != 0 {
		t.Errorf("proceed-on pass: the next program saw %d dropped packets, want 0", got)
	}
	if got := tr.recv.Count(); got != 0 {
		t.Errorf("%d datagrams arrived, want 0 (dropped)", got)
	}

	// Proceed on drop too: the next program runs and passes.
	c := e.current(t)
	k0, k1 := keep(c.Programs[0]), keep(c.Programs[1])
	k0.ProceedOn = passDrop
	e.apply(t, k0, k1)
	if got := e.current(t).Programs[0].ProceedOn; !slices.Equal(got, passDrop) {
		t.Fatalf("proceed-on read back as %v", got)
	}
	tr.send(t, 50)
	if got := second.waitFor(t, 50); got != 50 {
		t.Errorf("proceed-on drop,pass: the next program saw %d of 50", got)
	}
	if got := tr.received(50); got != 50 {
		t.Errorf("%d of 50 datagrams arrived after the last program passed them", got)
	}
}

// TestProceedOnDefault: a component without proceed-on verdicts (nil) goes
// on after XDP_PASS, the default; an empty list goes on after nothing, and
// reads back (and survives a change) as empty, so that a program another
// tool configured that way keeps its behaviour.
func TestProceedOnDefault(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	a, ca := comp(t, "a", "count_udp_packets", 10, nil, nil)
	b, cb := comp(t, "b", "count_udp_packets", 20, pass, nil)
	progs := e.apply(t, a, b)
	if !slices.Equal(progs[0].ProceedOn, pass) {
		t.Errorf("Programs() reports proceed-on %v for nil, want pass", progs[0].ProceedOn)
	}
	tr.send(t, 10)
	if got := cb.waitFor(t, 10); got != 10 {
		t.Errorf("default proceed-on: the second program saw %d of 10", got)
	}

	c := e.current(t)
	k0 := keep(c.Programs[0])
	k0.ProceedOn = bpf.Actions{}
	e.apply(t, k0, keep(c.Programs[1]))
	for i := range 2 {
		c = e.current(t)
		if got := c.Programs[0].ProceedOn; got == nil || len(got) != 0 {
			t.Fatalf("change %d: proceed-on read back as %#v, want empty", i, got)
		}
		e.apply(t, keep(c.Programs[0]), keep(c.Programs[1])) // round trip
	}
	tr.send(t, 10)
	if got := ca.waitFor(t, 20); got != 20 {
		t.Errorf("the first program saw %d of 20", got)
	}
	if got := tr.received(20); got != 20 {
		t.Errorf("%d of 20 arrived", got)
	}
	if got := cb.value(t); got != 10 {
		t.Errorf("empty proceed-on: the second program saw %d, want still 10", got)
	}
}

// TestParams: a component's params (volatile const globals) are set before
// it loads: the port selects what it counts, the verdict what it does.
func TestParams(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	other := e.traffic(t, testPort+1)
	only, onlyPort := comp(t, "only-port", "count_udp_packets", 10, pass, map[string]string{"port": fmt.Sprint(testPort + 1), "verdict": "1"})
	all, allUDP := comp(t, "all", "count_udp_packets", 20, pass, nil)
	e.apply(t, only, all)

	tr.send(t, 30)
	other.send(t, 20)
	if got := allUDP.waitFor(t, 30); got != 30 {
		t.Errorf("the second program counted %d, want the 30 to port %d", got, testPort)
	}
	if got := onlyPort.waitFor(t, 20); got != 20 {
		t.Errorf("the port-%d program counted %d, want 20", testPort+1, got)
	}
	if got := tr.received(30); got != 30 {
		t.Errorf("%d of 30 datagrams to port %d arrived", got, testPort)
	}
	if got := other.recv.Count(); got != 0 {
		t.Errorf("%d datagrams to port %d arrived; the param said drop", got, testPort+1)
	}
}

// TestReattachKeepsState: programs that stay in the chain across changes
// keep their program IDs and their maps (state), however the chain is
// reordered, grown or shrunk; the old dispatcher's pins are gone after
// each change.
func TestReattachKeepsState(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	a, ca := comp(t, "a", "count_udp_packets", 10, pass, nil)
	b, cb := comp(t, "b", "count_udp_packets", 20, pass, nil)
	progs := e.apply(t, a, b)
	idA, idB := progs[0].ID, progs[1].ID
	mapsBefore := programMaps(t, idA)

	tr.send(t, 10)
	ca.waitFor(t, 10)
	cb.waitFor(t, 10)

	// b first, then a third program in the middle, then back to one.
	steps := [][]func(c *bpf.Chain) bpf.Component{
		{func(c *bpf.Chain) bpf.Component { k := keep(c.Programs[1]); k.Priority = 5; return k }, func(c *bpf.Chain) bpf.Component { return keep(c.Programs[0]) }},
		{func(c *bpf.Chain) bpf.Component { return keep(c.Programs[0]) }, func(*bpf.Chain) bpf.Component {
			p, _ := comp(t, "middle", "pass_all", 7, pass, nil)
			return p
		}, func(c *bpf.Chain) bpf.Component { return keep(c.Programs[1]) }},
		{func(c *bpf.Chain) bpf.Component { return keep(c.Programs[2]) }},
	}
	sent := uint64(10)
	for i, step := range steps {
		c := e.current(t)
		var desired []bpf.Component
		for _, f := range step {
			desired = append(desired, f(c))
		}
		progs = e.apply(t, desired...)
		e.checkChain(t, progs)
		tr.send(t, 10)
		sent += 10
		for _, p := range progs {
			if p.Name == "count_udp_packets" && p.ID != idA && p.ID != idB {
				t.Errorf("step %d: a kept program has the new ID %d (a: %d, b: %d)", i, p.ID, idA, idB)
			}
		}
		if i < 2 {
			if got := ca.waitFor(t, sent); got != sent {
				t.Errorf("step %d: a counted %d, want %d (its map kept counting)", i, got, sent)
			}
		}
	}
	// Only a remains (it was slot 2 of step 2): single-program chain.
	final := e.current(t)
	if len(final.Programs) != 1 || final.Programs[0].ID != idA {
		t.Fatalf("final chain %+v, want a (%d) alone", final.Programs, idA)
	}
	if got := ca.waitFor(t, sent); got != sent {
		t.Errorf("a counted %d, want %d", got, sent)
	}
	if got := cb.value(t); got != sent-10 {
		t.Errorf("b counted %d, want %d (it left before the last 10)", got, sent-10)
	}
	if got := programMaps(t, idA); !slices.Equal(got, mapsBefore) {
		t.Errorf("a's maps changed from %v to %v", mapsBefore, got)
	}
}

// programMaps lists the map IDs a program uses.
func programMaps(t *testing.T, id ebpf.ProgramID) []ebpf.MapID {
	t.Helper()
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := info.MapIDs()
	slices.Sort(ids)
	return ids
}

// TestLoadFailure: when a component fails the verifier, the running chain
// stays attached and untouched, nothing new is pinned, and the error wraps
// bpf.ErrLoad, names the program and ends with the verifier's last words.
func TestLoadFailure(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	cnt, counts := comp(t, "count", "count_udp_packets", 10, pass, nil)
	e.apply(t, cnt)
	before := e.current(t)
	dirs := e.pinDirs(t)

	bad, _ := comp(t, "broken", "verifier_fail", 20, pass, nil)
	var err error
	e.in(t, func() error {
		_, err = e.b.Prepare(context.Background(), e.target, []bpf.Component{keep(before.Programs[0]), bad}, bpf.PrepareOptions{})
		return nil
	})
	if !errors.Is(err, bpf.ErrLoad) {
		t.Fatalf("Prepare = %v, want bpf.ErrLoad", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "broken") || !strings.Contains(msg, "verifier_fail") {
		t.Errorf("error does not name the program: %s", msg)
	}
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	if !strings.Contains(msg, "verifier log") || !strings.Contains(strings.ToLower(lines[len(lines)-1]+lines[len(lines)-2]), "packet") {
		t.Errorf("error does not end with the verifier's complaint about the packet access:\n%s", msg)
	}
	t.Logf("Prepare error:\n%s", msg)

	after := e.current(t)
	if after.RootID != before.RootID || !slices.Equal(names(after.Programs), names(before.Programs)) || after.Programs[0].ID != before.Programs[0].ID {
		t.Errorf("the chain changed: %+v, was %+v", after, before)
	}
	if got := e.pinDirs(t); !slices.Equal(got, dirs) {
		t.Errorf("pin directories %v, were %v", got, dirs)
	}
	tr.send(t, 20)
	if got := counts.waitFor(t, 20); got != 20 {
		t.Errorf("the old chain counted %d of 20 after the failure", got)
	}
}

// TestSwapUnderTraffic: a steady stream of datagrams while the chain is
// changed 50 times (a pass-through program added, moved before and after
// the counter, removed). The counter stays in every chain, so it must count
// exactly the datagrams that arrive: nothing lost in a swap, nothing counted
// twice.
func TestSwapUnderTraffic(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	cnt, counts := comp(t, "count", "count_udp_packets", 50, pass, nil)
	e.apply(t, cnt)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := tr.sender.StartStream(ctx, tr.dst, 2000)
	start := time.Now()
	const changes = 50
	for i := range changes {
		c := e.current(t)
		counter := keep(c.Programs[slices.IndexFunc(c.Programs, func(p bpf.ChainProgram) bool { return p.Name == "count_udp_packets" })])
		var desired []bpf.Component
		switch i % 3 {
		case 0: // add a pass-through after the counter
			p, _ := comp(t, "pass", "pass_all", 60, pass, nil)
			desired = []bpf.Component{counter, p}
		case 1: // move it before the counter
			p := keep(c.Programs[1])
			p.Priority = 40
			desired = []bpf.Component{p, counter}
		case 2: // remove it
			desired = []bpf.Component{counter}
		}
		e.apply(t, desired...)
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	sent, err := stream.Wait()
	if err != nil {
		t.Fatal(err)
	}
	received := tr.received(sent)
	counted := counts.waitFor(t, received)
	t.Logf("%d chain changes in %v under a stream: sent %d, received %d, counted %d", changes, elapsed.Round(time.Millisecond), sent, received, counted)
	if counted != received {
		t.Errorf("the counter counted %d datagrams, %d arrived", counted, received)
	}
	if received != sent {
		t.Errorf("%d of %d datagrams arrived", received, sent)
	}
	if sent < 500 {
		t.Errorf("only %d datagrams sent: the stream did not run during the changes", sent)
	}
}

// TestSingleProgram: like libxdp 1.3.1, a chain of one program replaces the
// dispatcher's main function, so the program's verdict is final even when
// it is in its proceed-on list; with a second program the slots and the
// chain-call checks run.
func TestSingleProgram(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	dropper, drops := comp(t, "dropper", "count_udp_packets", 10, passDrop, map[string]string{"verdict": "1"})
	e.apply(t, dropper)
	tr.send(t, 20)
	drops.waitFor(t, 20)
	if got := tr.recv.Count(); got != 0 {
		t.Errorf("single program returning XDP_DROP: %d datagrams arrived, want 0", got)
	}
	c := e.current(t)
	p, _ := comp(t, "pass", "pass_all", 20, pass, nil)
	e.apply(t, keep(c.Programs[0]), p)
	tr.send(t, 20)
	if got := tr.received(20); got != 20 {
		t.Errorf("dropper proceeding on drop to a pass-through: %d of 20 arrived", got)
	}
}

// TestPacketChanger: a program that changes packet data
// (bpf_xdp_adjust_head) can replace a slot (the slots call
// bpf_xdp_adjust_tail for the verifier's sake; Linux 6.13 and later check).
func TestPacketChanger(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	adj, adjusted := comp(t, "adjust", "adjust_head", 10, pass, nil)
	cnt, counts := comp(t, "count", "count_udp_packets", 20, pass, nil)
	e.apply(t, adj, cnt)
	tr.send(t, 20)
	if got := adjusted.waitFor(t, 20); got != 20 {
		t.Errorf("adjust_head counted %d of 20", got)
	}
	if got := counts.waitFor(t, 20); got != 20 {
		t.Errorf("the next program counted %d of 20", got)
	}
	if got := tr.received(20); got != 20 {
		t.Errorf("%d of 20 arrived", got)
	}
}

// TestFrags: the dispatcher carries BPF_F_XDP_HAS_FRAGS when every
// component handles multi-buffer packets and the kernel knows the flag
// (5.18); each slot's program_flags say which do.
func TestFrags(t *testing.T) {
	e := newEXTEnv(t)
	f1, _ := comp(t, "f1", "frags_pass", 10, pass, nil)
	f2, _ := comp(t, "f2", "frags_pass", 20, pass, nil)
	e.apply(t, f1, f2)
	cfg := e.dispatcherConfig(t)
	kernelFrags := kernelKnowsFrags(t)
	if cfg.Frags != kernelFrags || cfg.ProgramFlags[0] != FlagXDPHasFrags || cfg.ProgramFlags[1] != FlagXDPHasFrags {
		t.Errorf("two frags programs: is_xdp_frags %v (kernel supports frags: %v), program_flags %v", cfg.Frags, kernelFrags, cfg.ProgramFlags[:2])
	}
	c := e.current(t)
	plain, _ := comp(t, "plain", "pass_all", 30, pass, nil)
	e.apply(t, keep(c.Programs[0]), keep(c.Programs[1]), plain)
	cfg = e.dispatcherConfig(t)
	if cfg.Frags || cfg.ProgramFlags[0] != FlagXDPHasFrags || cfg.ProgramFlags[1] != FlagXDPHasFrags || cfg.ProgramFlags[2] != 0 {
		t.Errorf("with a program without frags: is_xdp_frags %v, program_flags %v", cfg.Frags, cfg.ProgramFlags[:3])
	}
}

func (e *env) dispatcherConfig(t *testing.T) Config {
	t.Helper()
	c := e.current(t)
	p, err := ebpf.NewProgramFromID(c.RootID)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cfg, err := Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRemoveAll: an empty chain detaches the dispatcher and removes every
// pin; the programs are gone from the kernel.
func TestRemoveAll(t *testing.T) {
	e := newEXTEnv(t)
	a, _ := comp(t, "a", "count_udp_packets", 10, pass, nil)
	b, _ := comp(t, "b", "pass_all", 20, pass, nil)
	progs := e.apply(t, a, b)
	e.apply(t)
	if got := e.attached(t); got != 0 {
		t.Fatalf("the hook runs %d after removing everything", got)
	}
	entries, err := os.ReadDir(xdpDir(e.target.BPFFS))
	if err != nil || len(entries) != 0 {
		t.Fatalf("left in %s: %v %v", xdpDir(e.target.BPFFS), entries, err)
	}
	for _, p := range progs {
		// Programs are freed asynchronously (RCU): allow a moment.
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			pr, err := ebpf.NewProgramFromID(p.ID)
			if err != nil {
				break
			}
			pr.Close()
			if time.Now().After(deadline) {
				t.Errorf("program %s (%d) still loaded", p.Name, p.ID)
				break
			}
		}
	}
}

// TestRevert: Revert after Commit brings back the previous dispatcher with
// its programs and pins (multi-hook transactions roll back this way).
func TestRevert(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	a, ca := comp(t, "a", "count_udp_packets", 10, pass, nil)
	first := e.apply(t, a)
	before := e.current(t)

	dropper, _ := comp(t, "dropper", "drop_udp", 5, pass, nil)
	ctx := context.Background()
	var ch bpf.Change
	e.in(t, func() (err error) {
		ch, err = e.b.Prepare(ctx, e.target, []bpf.Component{dropper, keep(before.Programs[0])}, bpf.PrepareOptions{})
		return err
	})
	defer ch.Close()
	e.in(t, func() error { return ch.Commit(ctx) })
	if got := e.current(t); got.RootID == before.RootID || len(got.Programs) != 2 {
		t.Fatalf("after Commit: %+v", got)
	}
	e.in(t, func() error { return ch.Revert(ctx) })
	e.checkChain(t, first)
	if got := e.current(t).RootID; got != before.RootID {
		t.Fatalf("after Revert the hook runs dispatcher %d, want %d", got, before.RootID)
	}
	tr.send(t, 10)
	if got := tr.received(10); got != 10 {
		t.Errorf("%d of 10 arrived after Revert (the dropper is gone)", got)
	}
	if got := ca.waitFor(t, 10); got != 10 {
		t.Errorf("a counted %d of 10", got)
	}
}

// TestConflictBetweenChanges: two changes prepared from the same chain; the
// second to commit finds the hook changed, fails with bpf.ErrConflict and
// leaves no pins behind.
func TestConflictBetweenChanges(t *testing.T) {
	e := newEXTEnv(t)
	a, _ := comp(t, "a", "pass_all", 10, pass, nil)
	e.apply(t, a)
	c := e.current(t)
	ctx := context.Background()
	prepare := func(name string) bpf.Change {
		p, _ := comp(t, name, "count_udp_packets", 20, pass, nil)
		var ch bpf.Change
		e.in(t, func() (err error) {
			ch, err = e.b.Prepare(ctx, e.target, []bpf.Component{keep(c.Programs[0]), p}, bpf.PrepareOptions{})
			return err
		})
		t.Cleanup(func() { ch.Close() })
		return ch
	}
	first, second := prepare("first"), prepare("second")
	e.in(t, func() error { return first.Commit(ctx) })
	var err error
	e.in(t, func() error { err = second.Commit(ctx); return nil })
	if !errors.Is(err, bpf.ErrConflict) {
		t.Fatalf("second Commit = %v, want bpf.ErrConflict", err)
	}
	e.checkChain(t, first.Programs())
}

// TestSkbMode: chains work in skb (generic) mode too, and the mode is kept.
func TestSkbMode(t *testing.T) {
	e := newEXTEnv(t)
	tr := e.traffic(t, testPort)
	a, ca := comp(t, "a", "count_udp_packets", 10, pass, nil)
	ctx := context.Background()
	var ch bpf.Change
	e.in(t, func() (err error) {
		ch, err = e.b.Prepare(ctx, e.target, []bpf.Component{a}, bpf.PrepareOptions{XDPMode: "skb"})
		return err
	})
	defer ch.Close()
	e.in(t, func() error { return ch.Commit(ctx) })
	c := e.current(t)
	if c.Mode != string(xdp.ModeSKB) {
		t.Fatalf("mode %q, want skb", c.Mode)
	}
	b, _ := comp(t, "b", "pass_all", 20, pass, nil)
	e.apply(t, keep(c.Programs[0]), b)
	if got := e.current(t).Mode; got != string(xdp.ModeSKB) {
		t.Errorf("after a change without a mode: %q, want skb kept", got)
	}
	tr.send(t, 10)
	if got := ca.waitFor(t, 10); got != 10 {
		t.Errorf("counted %d of 10 in skb mode", got)
	}
}

func TestMain(m *testing.M) {
	if job := os.Getenv(killChildEnv); job != "" {
		killChild(job) // never returns
	}
	os.Exit(m.Run())
}

// killChildEnv makes the test binary a child of TestKilledMidChange; it
// holds the child's job as JSON.
const killChildEnv = "KFM_DISPATCHER_KILL_CHILD"

type killJob struct {
	NSPath string     `json:"nsPath"`
	Target bpf.Target `json:"target"`
	BPFFS  string     `json:"bpffs"` // Target leaves it out of JSON
}

// childTB stands in for testing.TB in the child, which runs outside any
// test: a failure ends the process with status 2.
type childTB struct{ testing.TB }

func (childTB) Helper()                        {}
func (childTB) Cleanup(func())                 {}
func (childTB) Fatal(args ...any)              { fmt.Fprintln(os.Stderr, args...); os.Exit(2) }
func (childTB) Fatalf(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...); os.Exit(2) }

// tagChain is the chain A then B (ab) or B then A of chaintest's tag
// programs, which write their letter into the datagrams they see.
func tagChain(tb testing.TB, ab bool) []bpf.Component {
	obj := chaintest.Object(tb, "tag")
	comp := func(name string, prio int) chaintest.Component {
		return chaintest.Component{Obj: obj, Name: name, Function: "xdp_tag", Priority: prio, Params: map[string]string{"tag": fmt.Sprint(int(name[0]))}}
	}
	if ab {
		return chaintest.Build(tb, comp("A", 1), comp("B", 2))
	}
	return chaintest.Build(tb, comp("B", 1), comp("A", 2))
}

// killChild enters the job's namespace and changes the chain AB, BA, AB...
// until it is killed, printing a line after every commit.
func killChild(raw string) {
	tb := childTB{}
	var job killJob
	if err := json.Unmarshal([]byte(raw), &job); err != nil {
		tb.Fatal(err)
	}
	job.Target.BPFFS = job.BPFFS
	runtime.LockOSThread() // this thread stays in the namespace
	ns, err := vnetns.GetFromPath(job.NSPath)
	if err != nil {
		tb.Fatal(err)
	}
	if err := vnetns.Set(ns); err != nil {
		tb.Fatal(err)
	}
	b := New(nil)
	ctx := context.Background()
	for i := 1; ; i++ {
		ch, err := b.Prepare(ctx, job.Target, tagChain(tb, i%2 == 0), bpf.PrepareOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		if err := ch.Commit(ctx); err != nil {
			tb.Fatal(err)
		}
		ch.Close()
		fmt.Printf("committed %d\n", i)
	}
}

// TestKilledMidChange kills processes that keep changing the chain (BA,
// AB, BA...) at random moments of their changes: after every kill the hook
// runs one complete chain for every packet and Current reads it, because
// the protocol pins a dispatcher before it attaches it and unpins the old
// one after. A kill may leave the pin directory of a dispatcher that never
// ran or no longer runs, as with libxdp; Release (what `xdp-loader clean`
// does) removes them.
func TestKilledMidChange(t *testing.T) {
	testenv.RequireEXT(t)
	env := chaintest.NewEnv(t, bpf.HookXDP)
	b := New(nil)
	env.Apply(t, b, tagChain(t, true))
	job, err := json.Marshal(killJob{NSPath: env.NS.Path(), Target: env.Target, BPFFS: env.Target.BPFFS})
	if err != nil {
		t.Fatal(err)
	}
	dirs := func() []string {
		m, _ := filepath.Glob(filepath.Join(xdpDir(env.Target.BPFFS), "dispatch-*"))
		return m
	}
	const rounds = 15
	seen := map[string]int{}
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+string(job))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for the child's first commit, measure a change, and kill it
		// somewhere within the next one or two changes.
		lines := bufio.NewScanner(out)
		start := time.Now()
		if !lines.Scan() {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: the child died before its first commit", round)
		}
		perChange := time.Since(start) / 2
		time.Sleep(time.Duration(rand.Int64N(int64(2 * perChange))))
		cmd.Process.Signal(syscall.SIGKILL)
		go io.Copy(io.Discard, out)
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: the child exited on its own: %v", round, cmd.ProcessState)
		}

		c := env.Current(t, b)
		if c == nil || len(c.Programs) != 2 {
			t.Fatalf("round %d: after the kill Current reads %+v, want a chain of two", round, c)
		}
		traces := env.Traces(t, 10, 10)
		if len(traces) != 1 || traces["AB"] != 10 && traces["BA"] != 10 {
			t.Fatalf("round %d: after the kill traffic runs %s, want one complete chain", round, chaintest.FormatTraces(traces))
		}
		for k := range traces {
			seen[k]++
		}
	}
	t.Logf("%d kills: chains running afterwards %v; %d stale pin directories left", rounds, seen, len(dirs())-1)

	env.Do(t, func() error { return b.Release(context.Background(), env.Target) })
	if got := dirs(); len(got) != 1 {
		t.Errorf("after Release: %v, want only the running dispatcher's", got)
	}
	env.Apply(t, b, tagChain(t, true))
	if traces := env.Traces(t, 10, 10); traces["AB"] != 10 || len(traces) != 1 {
		t.Errorf("after the kills a new chain AB runs %s", chaintest.FormatTraces(traces))
	}
	if got := dirs(); len(got) != 1 {
		t.Errorf("after a change: %v, want one directory", got)
	}
}
