package main

// End-to-end tests of network namespaces (issue 15, part 5): chains on
// interfaces inside other namespaces (--netns), pins keyed by namespace, no
// leaks when an interface disappears, and the private-bpffs trap of `ip
// netns exec`. kfm runs in the test's own network namespace (the "host"
// for kfm) and reaches the interfaces through --netns; the interfaces are
// veth pairs in namespaces the test creates.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// nsEnv gives a test its own kfm directories and bpffs.
type nsEnv struct {
	t                        *testing.T
	bpffs, stateDir, confDir string
}

func newNSEnv(t *testing.T) *nsEnv {
	t.Helper()
	testenv.RequirePrivileged(t)
	cliEnv(t)
	e := &nsEnv{t: t, bpffs: testenv.BPFFS(t), stateDir: os.Getenv("KFM_STATE_DIR"), confDir: os.Getenv("KFM_CONFIG_DIR")}
	t.Setenv("KFM_BPFFS", e.bpffs)
	return e
}

func (e *nsEnv) kfm(args ...string) string {
	e.t.Helper()
	out, stderr, code := kfm(e.t, "", args...)
	if code != exitOK {
		e.t.Fatalf("kfm %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

func (e *nsEnv) status(netnsName string) []chain.HookStatus {
	e.t.Helper()
	var hs []chain.HookStatus
	out := e.kfm("status", "--netns", netnsName, "-o", "json")
	if err := json.Unmarshal([]byte(out), &hs); err != nil {
		e.t.Fatalf("status -o json: %v: %s", err, out)
	}
	return hs
}

// pins lists every file and directory under <bpffs>/kfm and <bpffs>/xdp.
func (e *nsEnv) pins() []string {
	e.t.Helper()
	var out []string
	for _, top := range []string{"kfm", "xdp"} {
		root := filepath.Join(e.bpffs, top)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(e.bpffs, path)
			out = append(out, rel)
			return nil
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

// mapPins lists the pins of a state map, in every namespace's directory.
func (e *nsEnv) mapPins(ifindex int, hook, element, mapName string) []string {
	e.t.Helper()
	pins, err := filepath.Glob(filepath.Join(e.bpffs, "kfm", "maps", "ns-*", strconv.Itoa(ifindex), hook, element, mapName))
	if err != nil {
		e.t.Fatal(err)
	}
	return pins
}

// packets sums the packets of key in a per-CPU counter map pinned at pin.
func packets(t *testing.T, pin string, key uint32) uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatalf("open %s: %v", pin, err)
	}
	defer m.Close()
	var vals []counter
	if err := m.Lookup(key, &vals); err != nil {
		t.Fatalf("lookup %s: %v", pin, err)
	}
	var n uint64
	for _, v := range vals {
		n += v.Packets
	}
	return n
}

func mapID(t *testing.T, pin string) ebpf.MapID {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatalf("open %s: %v", pin, err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// send sends n UDP datagrams from p.A to port on p.B and waits until they
// arrived.
func send(t *testing.T, p *netns.Pair, port uint16, n int) {
	t.Helper()
	r := netns.Listen(t, p.B, p.BAddr, int(port))
	s := netns.NewSender(t, p.A)
	if _, err := s.Send(netip.AddrPortFrom(p.BAddr, port), n, []byte("kfm-netns")); err != nil {
		t.Fatal(err)
	}
	if got := r.WaitFor(uint64(n), 5*time.Second); got < uint64(n) {
		t.Fatalf("%d of %d datagrams arrived", got, n)
	}
}

// xdpProgram is the program attached to iface's XDP hook inside ns.
func xdpProgram(t *testing.T, ns *netns.Namespace, iface string) uint32 {
	t.Helper()
	var id uint32
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil {
			id = x.ProgId
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestNetnsSameIfindex: two namespaces whose veths have the same ifindex
// each get a chain through --netns; the chains, their map state and their
// pins stay apart, packets are counted by the right chain, and removing one
// leaves the other running.
func TestNetnsSameIfindex(t *testing.T) {
	e := newNSEnv(t)
	p1, p2 := netns.NewPair(t), netns.NewPair(t)
	if p1.BIfindex != p2.BIfindex {
		t.Fatalf("the veths got ifindexes %d and %d; the test needs equal ones", p1.BIfindex, p2.BIfindex)
	}
	e.kfm("install", samplesDir+"xdp_count.o", "--iface", p1.BIf, "--netns", p1.B.Name, "--backend", "tailcall", "--name", "count")
	e.kfm("install", samplesDir+"xdp_count.o", "--iface", p2.BIf, "--netns", p2.B.Path(), "--backend", "tailcall", "--name", "count")

	s1, s2 := e.status(p1.B.Name), e.status(p2.B.Path())
	if len(s1) != 1 || len(s2) != 1 || len(s1[0].Programs) != 1 || len(s2[0].Programs) != 1 {
		t.Fatalf("status: want one chain of one program in each namespace, got %+v and %+v", s1, s2)
	}
	if s1[0].Netns != p1.B.Path() || s1[0].Programs[0].Origin != chain.OriginKFM {
		t.Errorf("status --netns %s: %+v", p1.B.Name, s1[0])
	}
	if s1[0].Programs[0].ProgramID == s2[0].Programs[0].ProgramID || s1[0].RootID == s2[0].RootID {
		t.Fatalf("both namespaces report the same programs: %+v / %+v", s1[0], s2[0])
	}
	// kfm status without --netns shows both namespaces' chains too.
	var all []chain.HookStatus
	if err := json.Unmarshal([]byte(e.kfm("status", "-o", "json")), &all); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, h := range all {
		if h.Netns != "" {
			seen = append(seen, h.Netns+" "+h.Interface)
		}
	}
	slices.Sort(seen)
	want := []string{p1.B.Path() + " " + p1.BIf, p2.B.Path() + " " + p2.BIf}
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Errorf("kfm status: chains in namespaces %v, want %v", seen, want)
	}
	// What runs on each interface is that namespace's root.
	if got := xdpProgram(t, p1.B, p1.BIf); got != uint32(s1[0].RootID) {
		t.Errorf("XDP program on %s in %s: %d, status says root %d", p1.BIf, p1.B.Name, got, s1[0].RootID)
	}
	if got := xdpProgram(t, p2.B, p2.BIf); got != uint32(s2[0].RootID) {
		t.Errorf("XDP program on %s in %s: %d, status says root %d", p2.BIf, p2.B.Name, got, s2[0].RootID)
	}
	// Nothing under the host's layout: both chains are keyed by namespace.
	if _, err := os.Stat(filepath.Join(e.bpffs, "kfm", "maps", strconv.Itoa(p1.BIfindex))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pins under the host namespace's layout: %v", e.pins())
	}
	pins := e.mapPins(p1.BIfindex, "xdp", "count", "counters")
	if len(pins) != 2 {
		t.Fatalf("counters pins: %v; want one per namespace (all pins: %v)", pins, e.pins())
	}

	// Packets in namespace 1 count in namespace 1's map only.
	send(t, p1, 4001, 20)
	var counts []uint64
	for _, pin := range pins {
		counts = append(counts, packets(t, pin, udp))
	}
	slices.Sort(counts)
	if counts[0] != 0 || counts[1] < 20 {
		t.Errorf("UDP packets counted per namespace: %v; want 0 and >= 20", counts)
	}

	// Removing namespace 1's chain leaves namespace 2's running.
	e.kfm("remove", "count", "--iface", p1.BIf, "--netns", p1.B.Name)
	if got := xdpProgram(t, p1.B, p1.BIf); got != 0 {
		t.Errorf("XDP program %d still on %s after remove", got, p1.BIf)
	}
	if s := e.status(p2.B.Name); len(s) != 1 || s[0].Programs[0].ProgramID != s2[0].Programs[0].ProgramID {
		t.Errorf("namespace 2 after removing namespace 1's chain: %+v", s)
	}
	if got := e.mapPins(p1.BIfindex, "xdp", "count", "counters"); len(got) != 1 {
		t.Errorf("counters pins after remove: %v", got)
	}
}

// recreateVeth deletes the veth of p and creates a new pair with the same
// names and the same ifindex inside B (a new interface that reuses the
// ifindex, as after pod churn with a CNI that asks for indexes).
func recreateVeth(t *testing.T, p *netns.Pair, recreate bool) {
	t.Helper()
	if err := p.B.Do(func() error {
		l, err := netlink.LinkByName(p.BIf)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Fatalf("delete %s: %v", p.BIf, err)
	}
	if !recreate {
		return
	}
	a, err := vnetns.GetFromPath(p.A.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := vnetns.GetFromPath(p.B.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.BIf, Index: p.BIfindex, Namespace: netlink.NsFd(b)},
		PeerName:      p.AIf,
		PeerNamespace: netlink.NsFd(a),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("recreate %s with ifindex %d: %v", p.BIf, p.BIfindex, err)
	}
	setup := func(ns *netns.Namespace, name string, addr netip.Addr) net.HardwareAddr {
		var mac net.HardwareAddr
		if err := ns.Do(func() error {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(30, 32)}}); err != nil {
				return err
			}
			mac = l.Attrs().HardwareAddr
			return netlink.LinkSetUp(l)
		}); err != nil {
			t.Fatalf("set up %s: %v", name, err)
		}
		return mac
	}
	p.AMAC = setup(p.A, p.AIf, p.AAddr)
	p.BMAC = setup(p.B, p.BIf, p.BAddr)
	for _, x := range []struct {
		ns   *netns.Namespace
		name string
		ip   netip.Addr
		mac  net.HardwareAddr
	}{{p.A, p.AIf, p.BAddr, p.BMAC}, {p.B, p.BIf, p.AAddr, p.AMAC}} {
		if err := x.ns.Do(func() error {
			l, err := netlink.LinkByName(x.name)
			if err != nil {
				return err
			}
			return netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT, IP: x.ip.AsSlice(), HardwareAddr: x.mac})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitGone waits until none of ids is a loaded program (the kernel frees a
// program shortly after its last reference goes) and returns those left.
func waitGone(ids []ebpf.ProgramID, maps []ebpf.MapID) (progs []ebpf.ProgramID, ms []ebpf.MapID) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		progs, ms = nil, nil
		for _, id := range ids {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				progs = append(progs, id)
			}
		}
		for _, id := range maps {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				m.Close()
				ms = append(ms, id)
			}
		}
		if (len(progs) == 0 && len(ms) == 0) || time.Now().After(deadline) {
			return progs, ms
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNetnsInterfaceGone: a veth carrying a kfm chain (tailcall, tcx, tc)
// is deleted. Whether the next kfm command runs before a new interface
// takes the ifindex (deleted) or after (reused), that command releases the
// old interface's host state and pins, the kernel frees its programs and
// maps, and a chain installed on the new interface starts from fresh maps.
func TestNetnsInterfaceGone(t *testing.T) {
	for _, tc := range []struct {
		backend, hook, obj, mapName string
		key                         uint32
	}{
		{"tailcall", "xdp", "xdp_count.o", "counters", udp},
		{"tcx", "tc-ingress", "tc_count.o", "totals", 0},
		{"tc", "tc-ingress", "tc_count.o", "totals", 0},
	} {
		for _, reuse := range []bool{false, true} {
			name := tc.backend + "/deleted"
			if reuse {
				name = tc.backend + "/reused"
			}
			t.Run(name, func(t *testing.T) {
				e := newNSEnv(t)
				p := netns.NewPair(t)
				install := func() {
					e.kfm("install", samplesDir+tc.obj, "--iface", p.BIf, "--netns", p.B.Name, "--hook", tc.hook, "--backend", tc.backend, "--name", "count")
				}
				install()
				send(t, p, 4001, 10)
				pins := e.mapPins(p.BIfindex, tc.hook, "count", tc.mapName)
				if len(pins) != 1 || packets(t, pins[0], tc.key) < 10 {
					t.Fatalf("counter pins %v (all: %v)", pins, e.pins())
				}
				oldCount := packets(t, pins[0], tc.key)
				oldMap := mapID(t, pins[0])
				st := e.status(p.B.Name)
				if len(st) != 1 || st[0].Backend != tc.backend {
					t.Fatalf("status: %+v", st)
				}
				ids := []ebpf.ProgramID{st[0].Programs[0].ProgramID}
				if st[0].RootID != 0 {
					ids = append(ids, st[0].RootID)
				}

				recreateVeth(t, p, reuse)
				if reuse {
					// The next command sees an interface with the old
					// ifindex that is not the old interface: it
					// prunes, then installs afresh.
					install()
				} else {
					e.kfm("status", "--netns", p.B.Name)
				}
				left, leftMaps := waitGone(ids, []ebpf.MapID{oldMap})
				if len(left) > 0 || len(leftMaps) > 0 {
					t.Errorf("after the interface went away, programs %v and maps %v are still loaded (pins: %v)", left, leftMaps, e.pins())
				}
				var state chain.State
				if b, err := os.ReadFile(filepath.Join(e.stateDir, "state.json")); err == nil {
					if err := json.Unmarshal(b, &state); err != nil {
						t.Fatal(err)
					}
				}
				if !reuse {
					if len(state.Hooks) != 0 {
						t.Errorf("host state still names the deleted interface: %+v", state.Hooks[0])
					}
					if got := e.pins(); len(got) > 0 && slices.ContainsFunc(got, func(s string) bool { return strings.Count(s, "/") > 1 }) {
						t.Errorf("pins left after the interface was deleted: %v", got)
					}
					return
				}
				// The new interface's chain has fresh maps.
				pins = e.mapPins(p.BIfindex, tc.hook, "count", tc.mapName)
				if len(pins) != 1 {
					t.Fatalf("counter pins on the new interface: %v", pins)
				}
				if id := mapID(t, pins[0]); id == oldMap {
					t.Errorf("the new interface inherited map %d of the old one", id)
				}
				// (tc_count counts every packet, and a new link sends a
				// few of its own: fresh means fewer than the old count.)
				if n := packets(t, pins[0], tc.key); n >= oldCount {
					t.Errorf("the new interface's counter starts at %d, the old one had %d: inherited", n, oldCount)
				}
				send(t, p, 4002, 5)
				if n := packets(t, pins[0], tc.key); n < 5 {
					t.Errorf("the chain on the new interface counted %d of 5 packets", n)
				}
				if len(state.Hooks) != 1 || state.Hooks[0].HWAddr != p.BMAC.String() {
					t.Errorf("host state: %+v; want the new interface (hwaddr %s)", state.Hooks, p.BMAC)
				}
			})
		}
	}
}

// TestNetnsRelease: the agent's entry point. Release of a deleted
// interface frees its pins and state; Release of an interface that still
// exists (a stale event) changes nothing.
func TestNetnsRelease(t *testing.T) {
	e := newNSEnv(t)
	p := netns.NewPair(t)
	e.kfm("install", samplesDir+"xdp_count.o", "--iface", p.BIf, "--netns", p.B.Name, "--backend", "tailcall", "--name", "count")
	m, err := chain.New(chain.Options{BPFFS: e.bpffs, StateDir: e.stateDir, ConfigDir: e.confDir, Backends: backends(e.bpffs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got, err := m.Release(ctx, p.B.Name, p.BIfindex); err != nil || len(got) != 0 {
		t.Fatalf("Release of a live interface: %+v, %v", got, err)
	}
	if st := e.status(p.B.Name); len(st) != 1 || st[0].Programs[0].Origin != chain.OriginKFM {
		t.Fatalf("after Release of a live interface: %+v", st)
	}
	root := e.status(p.B.Name)[0].RootID

	recreateVeth(t, p, false)
	m, _ = chain.New(chain.Options{BPFFS: e.bpffs, StateDir: e.stateDir, ConfigDir: e.confDir, Backends: backends(e.bpffs)})
	got, err := m.Release(ctx, p.B.Name, p.BIfindex)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Ifindex != p.BIfindex || len(got[0].Pins) == 0 {
		t.Fatalf("Release: %+v", got)
	}
	if left, _ := waitGone([]ebpf.ProgramID{root}, nil); len(left) > 0 {
		t.Errorf("root program %d still loaded after Release", root)
	}
	if pins := e.pins(); slices.ContainsFunc(pins, func(s string) bool { return strings.Contains(s, "ns-") }) {
		t.Errorf("pins left after Release: %v", pins)
	}
}

// TestNetnsOldLayout: a chain installed by the kfm before namespaces (host
// state without netns, netnsId and hwaddr; pins under
// <bpffs>/kfm/*/IFINDEX) is still found, upgraded with its map state, and
// removed by this kfm. kfm runs inside the interface's namespace here, as
// the old kfm had to.
func TestNetnsOldLayout(t *testing.T) {
	e := newNSEnv(t)
	p := netns.NewPair(t)
	inB := func(args ...string) string {
		t.Helper()
		var out string
		var code int
		var stderr string
		if err := p.B.Do(func() error { out, stderr, code = kfm(t, "", args...); return nil }); err != nil {
			t.Fatal(err)
		}
		if code != exitOK {
			t.Fatalf("kfm %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return out
	}
	inB("install", samplesDir+"xdp_count.o", "--iface", p.BIf, "--backend", "tailcall", "--name", "count", "--priority", "20")
	pin := filepath.Join(e.bpffs, "kfm", "maps", strconv.Itoa(p.BIfindex), "xdp", "count", "counters")
	send(t, p, 4001, 10)
	if n := packets(t, pin, udp); n < 10 {
		t.Fatalf("counted %d", n)
	}
	oldMap := mapID(t, pin)

	// Rewrite the host state as the previous kfm wrote it.
	statePath := filepath.Join(e.stateDir, "state.json")
	b, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, h := range raw["hooks"].([]any) {
		for _, k := range []string{"netns", "netnsId", "hwaddr", "rootId"} {
			delete(h.(map[string]any), k)
		}
	}
	b, _ = json.Marshal(raw)
	if err := os.WriteFile(statePath, b, 0o644); err != nil {
		t.Fatal(err)
	}

	var st []chain.HookStatus
	if err := json.Unmarshal([]byte(inB("status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || len(st[0].Programs) != 1 || st[0].Programs[0].Origin != chain.OriginKFM || st[0].Programs[0].Name != "count" {
		t.Fatalf("status of the old layout: %+v", st)
	}
	// An upgrade (new priority, a second program) keeps the map.
	inB("install", samplesDir+"xdp_count.o", "--iface", p.BIf, "--name", "count", "--priority", "10")
	inB("install", samplesDir+"xdp_count.o", "--iface", p.BIf, "--name", "count2", "--priority", "30")
	if id := mapID(t, pin); id != oldMap {
		t.Errorf("map %d replaced by %d in the upgrade", oldMap, id)
	}
	if n := packets(t, pin, udp); n < 10 {
		t.Errorf("counter lost in the upgrade: %d", n)
	}
	inB("remove", "count", "--iface", p.BIf)
	inB("remove", "count2", "--iface", p.BIf)
	if pins := e.pins(); slices.ContainsFunc(pins, func(s string) bool { return strings.Count(s, "/") > 1 }) {
		t.Errorf("pins left after removing everything: %v", pins)
	}
	if got := xdpProgram(t, p.B, p.BIf); got != 0 {
		t.Errorf("XDP program %d left", got)
	}
}

// TestNetnsExecRefused runs the kfm binary under `ip netns exec`, as a new
// user would: it refuses, names --netns, and attaches nothing; the same
// binary with --netns from the host's mount namespace works.
func TestNetnsExecRefused(t *testing.T) {
	testenv.RequirePrivileged(t)
	ip := testenv.RequireTool(t, "ip")
	bin := filepath.Join(t.TempDir(), "kfm")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	p := netns.NewPair(t)
	dirs := []string{"KFM_CONFIG_DIR=" + t.TempDir(), "KFM_STATE_DIR=" + t.TempDir(), "KFM_CACHE_DIR=" + t.TempDir()}
	obj, err := filepath.Abs(samplesDir + "xdp_count.o")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"status"},
		{"install", obj, "--iface", p.BIf, "--backend", "tailcall"},
	} {
		// The default bpffs path, as a user types it: under ip netns exec,
		// /sys is a fresh sysfs and /sys/fs/bpf an empty directory.
		cmd := exec.Command(ip, append([]string{"netns", "exec", p.B.Name, bin}, args...)...)
		cmd.Env = append(os.Environ(), append(dirs, "KFM_BPFFS=/sys/fs/bpf")...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
			t.Fatalf("ip netns exec %s kfm %s: %v, want exit %d\n%s", p.B.Name, strings.Join(args, " "), err, exitFailure, out)
		}
		for _, want := range []string{"ip netns exec", "--netns NAME", "BPF filesystem"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("kfm %s under ip netns exec: message lacks %q:\n%s", args[0], want, out)
			}
		}
	}
	if got := xdpProgram(t, p.B, p.BIf); got != 0 {
		t.Errorf("XDP program %d attached although kfm refused", got)
	}

	// The way that works: from the host's mount namespace, with --netns.
	bpffs := testenv.BPFFS(t)
	env := append(os.Environ(), append(dirs, "KFM_BPFFS="+bpffs)...)
	for _, args := range [][]string{
		{"install", obj, "--iface", p.BIf, "--backend", "tailcall", "--netns", p.B.Name},
		{"status", "--netns", p.B.Name},
		{"remove", "xdp_count", "--iface", p.BIf, "--netns", p.B.Name},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kfm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if args[0] == "install" && xdpProgram(t, p.B, p.BIf) == 0 {
			t.Errorf("kfm install --netns attached nothing")
		}
	}
}

// TestNetnsManifest: chains with netns: in kfm.yaml go to their namespaces
// with kfm apply, kfm.lock keeps the namespace, apply --locked is content,
// and apply --netns touches only that namespace's chains.
func TestNetnsManifest(t *testing.T) {
	e := newNSEnv(t)
	p1, p2 := netns.NewPair(t), netns.NewPair(t)
	obj, err := filepath.Abs(samplesDir + "xdp_count.o")
	if err != nil {
		t.Fatal(err)
	}
	manifest := func(nss ...string) {
		var b strings.Builder
		b.WriteString("version: 1\nchains:\n")
		for _, ns := range nss {
			fmt.Fprintf(&b, "  - interface: %s\n    netns: %s\n    hook: xdp\n    backend: tailcall\n    programs:\n      - {name: count, path: %s}\n",
				map[string]string{p1.B.Name: p1.BIf, p2.B.Path(): p2.BIf}[ns], ns, obj)
		}
		if err := os.WriteFile(filepath.Join(e.confDir, "kfm.yaml"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	manifest(p1.B.Name, p2.B.Path())
	e.kfm("apply")
	lk, err := chain.LoadLock(filepath.Join(e.confDir, "kfm.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if lk.ChainIn(p1.B.Path(), p1.BIf, "xdp") == nil || lk.ChainIn(p2.B.Path(), p2.BIf, "xdp") == nil {
		t.Fatalf("kfm.lock: %+v", lk.Chains)
	}
	s1, s2 := e.status(p1.B.Name), e.status(p2.B.Name)
	if len(s1) != 1 || len(s2) != 1 || len(s1[0].Programs) != 1 || len(s2[0].Programs) != 1 {
		t.Fatalf("status after apply: %+v / %+v", s1, s2)
	}
	if len(s1[0].Drift) > 0 || len(s2[0].Drift) > 0 {
		t.Errorf("drift right after apply: %v / %v", s1[0].Drift, s2[0].Drift)
	}
	if out := e.kfm("apply", "--locked", "-o", "json"); strings.Contains(out, `"added"`) {
		t.Errorf("apply --locked changed something: %s", out)
	}

	// Drop namespace 2's chain from kfm.yaml; apply --netns for namespace 1
	// leaves it running, a full apply removes it.
	manifest(p1.B.Name)
	e.kfm("apply", "--netns", p1.B.Name)
	if s := e.status(p2.B.Name); len(s) != 1 || s[0].Programs[0].ProgramID != s2[0].Programs[0].ProgramID {
		t.Errorf("apply --netns %s touched namespace 2: %+v", p1.B.Name, s)
	}
	e.kfm("apply")
	if got := xdpProgram(t, p2.B, p2.BIf); got != 0 {
		t.Errorf("namespace 2 still runs XDP program %d after its chain left kfm.yaml", got)
	}
	if s := e.status(p1.B.Name); len(s) != 1 || s[0].Programs[0].ProgramID != s1[0].Programs[0].ProgramID {
		t.Errorf("namespace 1's chain changed: %+v", s)
	}
}

// TestNetnsSharedStateDir: a kfm run inside a namespace (nsenter --net, no
// --netns) and a kfm run outside share the state directory and bpffs. The
// outside one's pruning must not take the inside one's chain for an
// interface that is gone: it is not in its namespace, but it exists.
func TestNetnsSharedStateDir(t *testing.T) {
	e := newNSEnv(t)
	p := netns.NewPair(t)
	inB := func(args ...string) string {
		t.Helper()
		var out, stderr string
		var code int
		if err := p.B.Do(func() error { out, stderr, code = kfm(t, "", args...); return nil }); err != nil {
			t.Fatal(err)
		}
		if code != exitOK {
			t.Fatalf("kfm %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return out
	}
	inB("install", samplesDir+"xdp_count.o", "--iface", p.BIf, "--backend", "tailcall", "--name", "count")
	root := xdpProgram(t, p.B, p.BIf)
	e.kfm("status") // outside: prunes what it can judge
	var st []chain.HookStatus
	if err := json.Unmarshal([]byte(inB("status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || len(st[0].Programs) != 1 || st[0].Programs[0].Origin != chain.OriginKFM || uint32(st[0].RootID) != root {
		t.Fatalf("the inside chain after an outside kfm ran: %+v (pins: %v)", st, e.pins())
	}
	inB("remove", "count", "--iface", p.BIf)
	if got := xdpProgram(t, p.B, p.BIf); got != 0 {
		t.Errorf("XDP program %d left after remove", got)
	}
}
