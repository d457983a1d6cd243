package chain_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/bpf/tc"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// The chain-change-under-traffic test (issue 14): one chain, changed many
// times by chain.Manager (one Manager per change, as each kfm command makes
// one) while UDP datagrams stream through it, and at the end every packet
// accounted for, by the receiver, by kfm's verdict counters and by the
// programs' own counters.

// changesEnv sets the number of changes per backend; trafficSeedEnv the
// seed of the random sequence of changes.
const (
	changesEnv     = "KFM_TRAFFIC_CHANGES"
	trafficSeedEnv = "KFM_TRAFFIC_SEED"
)

// Default numbers of changes: small enough for make test (a host backend
// takes about 0.1 s a change on the busy 2-core development machine, the
// dispatcher in a VM under TCG 1 to 5 s). KFM_TRAFFIC_CHANGES=1000 is the
// full run.
const (
	defaultHostChanges = 100
	defaultVMChanges   = 60
)

// tagObjectPath is tag.o of the backends' tests (bpf/internal/chaintest):
// xdp_tag/tc_tag tag IPv4 UDP datagrams to `port` (0: any) by writing `tag`
// into the first zero byte of the payload's 16-byte trace, count them in
// their own map `count`, and return `verdict`; other packets pass
// untouched.
const tagObjectPath = "../bpf/internal/chaintest/tag.o"

const (
	openPort     = 8888 // datagrams every chain lets through
	filteredPort = 7777 // datagrams the filter drops
	traceLen     = 16
)

// trafficCase is one backend under test.
type trafficCase struct {
	backend  string
	hook     bpf.Hook
	mode     string
	function string
	// pass, drop and mark are the hook's verdicts: mark is what the
	// movable programs return for the datagrams they tag, a verdict of
	// its own so that kfm's counters tell tagged datagrams from the
	// filtered ones passing through; the chain proceeds on it.
	pass, drop, mark bpf.Action
	ext              bool // needs freplace (kernel VMs only)
	newBackend       func() chain.Backend
}

var trafficCases = []trafficCase{
	{backend: "tailcall", hook: bpf.HookXDP, function: "xdp_tag", pass: bpf.XDPPass, drop: bpf.XDPDrop, mark: bpf.XDPTx,
		newBackend: func() chain.Backend { return tailcall.New() }},
	{backend: "tcx", hook: bpf.HookTCIngress, function: "tc_tag", pass: bpf.TCOK, drop: bpf.TCShot, mark: bpf.TCPipe,
		newBackend: func() chain.Backend { return tc.NewTCX() }},
	{backend: "tc", hook: bpf.HookTCIngress, function: "tc_tag", pass: bpf.TCOK, drop: bpf.TCShot, mark: bpf.TCPipe,
		newBackend: func() chain.Backend { return tc.NewTC() }},
	{backend: "dispatcher", hook: bpf.HookXDP, mode: "skb", function: "xdp_tag", pass: bpf.XDPPass, drop: bpf.XDPDrop, mark: bpf.XDPTx, ext: true,
		newBackend: func() chain.Backend { return dispatcher.New(nil) }},
}

// trafficProg is one program of the model chain.
type trafficProg struct {
	name    string
	letter  byte // the tag of version 1; version 2 tags its upper case
	port    int
	verdict bpf.Action // 0: the object's default (pass)
	proceed string     // proceed-on, "" for the default
	movable bool       // may be removed and re-added
	fixed   bool       // never reordered (the last program)

	present bool
	prio    int
	v2      bool
}

func (p *trafficProg) tag() byte {
	if p.v2 {
		return p.letter - 'a' + 'A'
	}
	return p.letter
}

// TestChangesUnderTraffic makes N seeded random changes to one chain (N =
// KFM_TRAFFIC_CHANGES, default 100 on the host, 60 in the kernel VMs;
// seed KFM_TRAFFIC_SEED, default random and logged) while datagrams stream
// through it to an open and a filtered port, on every backend: tailcall
// (XDP), tcx and tc (TC ingress) on the host, the dispatcher (XDP,
// freplace) in the kernel VMs.
//
// The chain: "filter" drops the datagrams to the filtered port and is
// reordered and upgraded anywhere in the chain; "a".."d" tag the datagrams
// to the open port with their letter (a verdict the chain proceeds on) and
// are added, removed, reordered and upgraded; "last" tags them too and
// always runs last. An upgrade reinstalls a program with a new version
// letter (upper case), so that kfm loads a new program that takes over the
// old one's maps and counters.
//
// Afterwards, exactly: every datagram to the open port arrived (none to
// the filtered one); each arrived datagram's trace is the chain of one of
// the configurations that ran (no packet saw a half-changed chain);
// "filter" counted (own map and kfm's verdict counters) every filtered
// datagram as dropped and every open one as passed; every other program
// counted, in its own map and in kfm's counters, exactly the datagrams
// whose trace carries its letter, summed over the times it was installed.
func TestChangesUnderTraffic(t *testing.T) {
	for _, bc := range trafficCases {
		t.Run(bc.backend, func(t *testing.T) {
			if bc.ext {
				testenv.RequireEXT(t)
			} else {
				testenv.RequirePrivileged(t)
			}
			n := defaultHostChanges
			if bc.ext {
				n = defaultVMChanges
			}
			if s := os.Getenv(changesEnv); s != "" {
				v, err := strconv.Atoi(s)
				if err != nil || v < 1 {
					t.Fatalf("%s=%q: want a positive number of changes", changesEnv, s)
				}
				n = v
			}
			seed := uint64(time.Now().UnixNano())
			if s := os.Getenv(trafficSeedEnv); s != "" {
				v, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					t.Fatalf("%s=%q: want a number", trafficSeedEnv, s)
				}
				seed = v
			}
			t.Logf("%d changes, seed %d (rerun: %s=%d %s=%d go test -run 'TestChangesUnderTraffic/^%s$' ./chain)",
				n, seed, trafficSeedEnv, seed, changesEnv, n, bc.backend)
			runChangesUnderTraffic(t, bc, n, seed)
		})
	}
}

// trafficRig is the host of one run.
type trafficRig struct {
	t                          *testing.T
	bc                         trafficCase
	pair                       *netns.Pair
	bpffs, stateDir, configDir string
	obj                        string
}

func (r *trafficRig) manager() *chain.Manager {
	m, err := chain.New(chain.Options{BPFFS: r.bpffs, StateDir: r.stateDir, ConfigDir: r.configDir,
		Backends: []chain.Backend{r.bc.newBackend()}})
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

// in runs fn inside the managed interface's namespace, as kfm runs there.
func (r *trafficRig) in(fn func(ctx context.Context, m *chain.Manager) error) {
	r.t.Helper()
	if err := r.pair.B.Do(func() error { return fn(context.Background(), r.manager()) }); err != nil {
		r.t.Fatal(err)
	}
}

func (r *trafficRig) install(p *trafficProg) *chain.HookStatus {
	r.t.Helper()
	params := map[string]string{"tag": strconv.Itoa(int(p.tag())), "port": strconv.Itoa(p.port)}
	if p.verdict != 0 {
		params["verdict"] = strconv.Itoa(int(p.verdict))
	}
	prio := p.prio
	req := chain.InstallRequest{Interface: r.pair.BIf, Hook: r.bc.hook, Backend: r.bc.backend, Mode: r.bc.mode,
		Source: r.obj, Function: r.bc.function, Name: p.name, Priority: &prio, ProceedOn: p.proceed, Params: params}
	var hs *chain.HookStatus
	r.in(func(ctx context.Context, m *chain.Manager) error {
		var err error
		hs, err = m.Install(ctx, req)
		if err != nil {
			return fmt.Errorf("install %s (priority %d, tag %c): %w", p.name, p.prio, p.tag(), err)
		}
		return nil
	})
	return hs
}

func (r *trafficRig) remove(p *trafficProg) *chain.HookStatus {
	r.t.Helper()
	var hs *chain.HookStatus
	r.in(func(ctx context.Context, m *chain.Manager) error {
		var err error
		hs, err = m.Remove(ctx, r.pair.BIf, r.bc.hook, p.name)
		if err != nil {
			return fmt.Errorf("remove %s: %w", p.name, err)
		}
		return nil
	})
	return hs
}

// elementDirs finds the pin directories of the programs' maps and
// counters, <bpffs>/kfm/maps/.../<hook>/<name>, by program name.
func (r *trafficRig) elementDirs() map[string]string {
	r.t.Helper()
	found := map[string]string{}
	root := filepath.Join(r.bpffs, "kfm", "maps")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && filepath.Base(filepath.Dir(path)) == string(r.bc.hook) {
			found[d.Name()] = path
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return found
}

// heldMaps keeps the counter maps of every program incarnation open, so
// that what a removed program counted (up to its last packet, which may
// come after the removal returned) can be read at the end. Maps are kept
// by ID: a program whose maps survive a change is counted once.
type heldMaps struct {
	byProg map[string]map[ebpf.MapID]*ebpf.Map // "name/count" or "name/kfm-counters"
}

func (h *heldMaps) hold(t *testing.T, dir, prog, pin string) ebpf.MapID {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, pin), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("%s: %v", prog, err)
	}
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("map IDs are not available")
	}
	key := prog + "/" + pin
	if h.byProg[key] == nil {
		h.byProg[key] = map[ebpf.MapID]*ebpf.Map{}
	}
	if _, seen := h.byProg[key][id]; seen {
		m.Close()
		return id
	}
	h.byProg[key][id] = m
	t.Cleanup(func() { m.Close() })
	return id
}

// ownCount sums the tag program's own `count` (an array of one u64) over
// every map the program had.
func (h *heldMaps) ownCount(t *testing.T, prog string) uint64 {
	t.Helper()
	var n uint64
	for _, m := range h.byProg[prog+"/count"] {
		var v uint64
		if err := m.Lookup(uint32(0), &v); err != nil {
			t.Fatal(err)
		}
		n += v
	}
	return n
}

// verdicts sums kfm's verdict counters over every counter map the program
// had.
func (h *heldMaps) verdicts(t *testing.T, prog string) counters.Counts {
	t.Helper()
	var c counters.Counts
	for _, m := range h.byProg[prog+"/"+counters.PinName] {
		got, err := counters.Read(m)
		if err != nil {
			t.Fatal(err)
		}
		for i := range c {
			c[i] += got[i]
		}
	}
	return c
}

func runChangesUnderTraffic(t *testing.T, bc trafficCase, changes int, seed uint64) {
	obj, err := filepath.Abs(tagObjectPath)
	if err != nil {
		t.Fatal(err)
	}
	r := &trafficRig{t: t, bc: bc, pair: netns.NewPair(t), bpffs: testenv.BPFFS(t),
		stateDir: t.TempDir(), configDir: t.TempDir(), obj: obj}
	r.pair.DisableIPv6(t)
	rng := rand.New(rand.NewPCG(seed, 0x6b666d))

	markProceed := bpf.ActionName(bc.hook, bc.pass) + "," + bpf.ActionName(bc.hook, bc.mark)
	progs := []*trafficProg{
		{name: "filter", letter: 'f', port: filteredPort, verdict: bc.drop},
		{name: "last", letter: 'z', port: openPort, fixed: true, prio: 1000},
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		progs = append(progs, &trafficProg{name: name, letter: name[0], port: openPort, verdict: bc.mark, proceed: markProceed, movable: true})
	}
	byName := map[string]*trafficProg{}
	for _, p := range progs {
		byName[p.name] = p
	}
	freePrio := func() int {
		for {
			p := 1 + rng.IntN(999)
			if !slices.ContainsFunc(progs, func(q *trafficProg) bool { return q.present && q.prio == p }) {
				return p
			}
		}
	}
	// order is the model chain in run order (priority, then name).
	order := func() []*trafficProg {
		var out []*trafficProg
		for _, p := range progs {
			if p.present {
				out = append(out, p)
			}
		}
		sort.Slice(out, func(i, j int) bool {
			if out[i].prio != out[j].prio {
				return out[i].prio < out[j].prio
			}
			return out[i].name < out[j].name
		})
		return out
	}
	// trace is what the current chain writes into an open-port datagram.
	trace := func() string {
		var b []byte
		for _, p := range order() {
			if p.port == openPort {
				b = append(b, p.tag())
			}
		}
		return string(b)
	}
	held := &heldMaps{byProg: map[string]map[ebpf.MapID]*ebpf.Map{}}
	// holdAll holds the maps of every program that runs; a program that
	// ran before the change (and was not added by it) must still have the
	// same maps: a change that replaced them would lose their counts.
	current := map[string]ebpf.MapID{}
	holdAll := func(step, added string) {
		t.Helper()
		dirs := r.elementDirs()
		for _, p := range progs {
			if !p.present {
				continue
			}
			dir := dirs[p.name]
			if dir == "" {
				t.Fatalf("%s: no pinned maps of %s", step, p.name)
			}
			for _, pin := range []string{"count", counters.PinName} {
				key := p.name + "/" + pin
				id := held.hold(t, dir, p.name, pin)
				if prev, ok := current[key]; ok && prev != id && p.name != added {
					t.Errorf("%s: %s's map %s was replaced (map %d, now %d): what it counted is gone from kfm stats", step, p.name, pin, prev, id)
				}
				current[key] = id
			}
		}
	}
	check := func(step string, hs *chain.HookStatus) {
		t.Helper()
		want := order()
		if hs == nil || hs.Backend != bc.backend || len(hs.Programs) != len(want) {
			t.Fatalf("%s: kfm reports %+v; want %d programs on %s", step, hs, len(want), bc.backend)
		}
		for i, p := range want {
			if hs.Programs[i].Name != p.name {
				t.Fatalf("%s: position %d runs %s, want %s (chain %+v)", step, i, hs.Programs[i].Name, p.name, hs.Programs)
			}
		}
	}

	// The first chain: filter, two taggers, last.
	var prev *chain.HookStatus
	for _, name := range []string{"filter", "a", "b", "last"} {
		p := byName[name]
		p.present = true
		if !p.fixed {
			p.prio = freePrio()
		}
		prev = r.install(p)
		check("install "+name, prev)
	}
	holdAll("first install", "")
	valid := map[string]bool{trace(): true}

	recv := netns.ListenTraces(t, r.pair.B, r.pair.BAddr, openPort, traceLen)
	filtered := netns.Listen(t, r.pair.B, r.pair.BAddr, filteredPort)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Alternately to the open and the filtered port, empty traces.
	fl := netns.StartFlood(t, ctx, r.pair.A, []netip.AddrPort{
		netip.AddrPortFrom(r.pair.BAddr, openPort), netip.AddrPortFrom(r.pair.BAddr, filteredPort),
	}, 2, make([]byte, traceLen+8))
	time.Sleep(50 * time.Millisecond)

	ops := map[string]int{}
	var lat []time.Duration
	start := time.Now()
	loadStart := trafficLoadavg()
	for i := 0; i < changes; i++ {
		var (
			op string
			p  *trafficProg
		)
		for p == nil {
			op = []string{"add", "remove", "reorder", "upgrade"}[rng.IntN(4)]
			var cands []*trafficProg
			for _, q := range progs {
				switch op {
				case "add":
					if q.movable && !q.present {
						cands = append(cands, q)
					}
				case "remove":
					if q.movable && q.present {
						cands = append(cands, q)
					}
				case "reorder":
					if q.present && !q.fixed {
						cands = append(cands, q)
					}
				case "upgrade":
					if q.present {
						cands = append(cands, q)
					}
				}
			}
			if len(cands) > 0 {
				p = cands[rng.IntN(len(cands))]
			}
		}
		step := fmt.Sprintf("change %d (%s %s)", i+1, op, p.name)
		before := programIDOf(prev, p.name)
		t0 := time.Now()
		var hs *chain.HookStatus
		switch op {
		case "add":
			p.present, p.prio, p.v2 = true, freePrio(), rng.IntN(2) == 1
			hs = r.install(p)
		case "remove":
			p.present = false
			hs = r.remove(p)
		case "reorder":
			p.prio = freePrio()
			hs = r.install(p)
		case "upgrade":
			p.v2 = !p.v2
			hs = r.install(p)
		}
		lat = append(lat, time.Since(t0))
		ops[op]++
		check(step, hs)
		if op == "upgrade" {
			if after := programIDOf(hs, p.name); after == before {
				t.Fatalf("%s: program %d was not reloaded", step, before)
			}
		}
		added := ""
		if op == "add" {
			added = p.name
		}
		holdAll(step, added)
		prev = hs
		valid[trace()] = true
	}
	elapsed := time.Since(start)
	loadEnd := trafficLoadavg()
	time.Sleep(50 * time.Millisecond)
	cancel()
	sent, err := fl.Wait()
	if err != nil {
		t.Fatal(err)
	}
	sentOpen, sentFiltered := sent[0], sent[1]
	got := recv.WaitFor(sentOpen, 10*time.Second)

	// Every datagram arrived or was dropped by the filter.
	if drops, err := netns.UDPSocketDrops(r.pair.B); err != nil {
		t.Fatal(err)
	} else if drops > 0 {
		t.Fatalf("the receiving socket dropped %d datagrams (queue full): the test cannot tell what the chain did with them", drops)
	}
	if got != sentOpen {
		t.Errorf("received %d of %d datagrams sent to the open port: %d lost", got, sentOpen, int64(sentOpen)-int64(got))
	}
	if n := filtered.Count(); n != 0 {
		t.Errorf("%d datagrams to the filtered port got through", n)
	}
	traces := recv.Traces()
	for tr, n := range traces {
		if !valid[tr] {
			t.Errorf("%d datagrams ran through %q, which no configuration of the chain was (a half-changed chain)", n, tr)
		}
	}
	if sentOpen < uint64(5*changes) || sentFiltered < uint64(5*changes) {
		t.Errorf("only %d+%d datagrams sent for %d changes: too few in flight during the changes", sentOpen, sentFiltered, changes)
	}

	// The programs' own counters and kfm's verdict counters.
	if c, v := held.ownCount(t, "filter"), held.verdicts(t, "filter"); c != sentFiltered || v.Verdict(bc.drop) != sentFiltered || v.Verdict(bc.pass) != sentOpen || v.Total() != sentOpen+sentFiltered {
		t.Errorf("filter counted %d itself; kfm counted %s=%d %s=%d (total %d); sent %d to the filtered port, %d to the open one",
			c, bpf.ActionName(bc.hook, bc.drop), v.Verdict(bc.drop), bpf.ActionName(bc.hook, bc.pass), v.Verdict(bc.pass), v.Total(), sentFiltered, sentOpen)
	}
	tagged := map[byte]uint64{}
	for tr, n := range traces {
		for i := 0; i < len(tr); i++ {
			tagged[tr[i]|0x20] += uint64(n)
		}
	}
	var summary []string
	for _, p := range progs[1:] {
		own, v := held.ownCount(t, p.name), held.verdicts(t, p.name)
		want := tagged[p.letter]
		marked := v.Verdict(bc.mark)
		if p.verdict == 0 {
			marked = v.Verdict(bc.pass)
		}
		summary = append(summary, fmt.Sprintf("%s=%d", p.name, own))
		if own != want || marked != want {
			t.Errorf("%s counted %d itself and kfm counted %d tagged; %d received datagrams carry its tag", p.name, own, marked, want)
		}
		if p.verdict == 0 && v.Total() != marked {
			t.Errorf("%s: kfm counted %d packets, %d of them tagged; it runs after the filter and sees only the open port's", p.name, v.Total(), marked)
		}
		// Its other verdicts: filtered datagrams passing through it on
		// their way to the filter, at most all of them.
		if p.verdict != 0 && (v.Total()-marked != v.Verdict(bc.pass) || v.Verdict(bc.pass) > sentFiltered) {
			t.Errorf("%s: kfm counted %s=%d of %d filtered datagrams, %d in all", p.name, bpf.ActionName(bc.hook, bc.pass), v.Verdict(bc.pass), sentFiltered, v.Total())
		}
	}

	// kfm stats (the public reading of the counters) agrees for what runs
	// now.
	r.in(func(ctx context.Context, m *chain.Manager) error {
		st, err := m.Stats(ctx, r.pair.BIf)
		if err != nil {
			return err
		}
		if len(st) != 1 {
			return fmt.Errorf("kfm stats: %d chains, want 1", len(st))
		}
		for _, ps := range st[0].Programs {
			if ps.Name == "filter" && (ps.Packets != sentOpen+sentFiltered || ps.Counts.Verdict(bc.drop) != sentFiltered) {
				t.Errorf("kfm stats: filter %d packets, %d dropped; sent %d+%d", ps.Packets, ps.Counts.Verdict(bc.drop), sentOpen, sentFiltered)
			}
			if ps.Name == "last" && ps.Packets != sentOpen {
				t.Errorf("kfm stats: last %d packets, want %d", ps.Packets, sentOpen)
			}
		}
		return nil
	})

	slices.Sort(lat)
	t.Logf("%s: %d changes (%s) in %v: %.1f changes/s; change latency median %v, p99 %v, max %v; load %s -> %s",
		bc.backend, changes, fmtTrafficOps(ops), elapsed.Round(time.Millisecond), float64(changes)/elapsed.Seconds(),
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), loadStart, loadEnd)
	t.Logf("%s: sent %d to the open port, %d to the filtered one; received %d, dropped by the filter %d; %d chain configurations, %d distinct traces; tagged: %s",
		bc.backend, sentOpen, sentFiltered, got, held.verdicts(t, "filter").Verdict(bc.drop), len(valid), len(traces), strings.Join(summary, " "))
}

func fmtTrafficOps(ops map[string]int) string {
	var s []string
	for _, op := range []string{"add", "remove", "reorder", "upgrade"} {
		s = append(s, fmt.Sprintf("%d %s", ops[op], op))
	}
	return strings.Join(s, ", ")
}

// programIDOf is the kernel ID of the program called name in hs (0 when
// it does not run).
func programIDOf(hs *chain.HookStatus, name string) ebpf.ProgramID {
	for _, p := range hs.Programs {
		if p.Name == name {
			return p.ProgramID
		}
	}
	return 0
}

// trafficLoadavg is the machine's load (1, 5, 15 minutes), quoted with the
// figures.
func trafficLoadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
