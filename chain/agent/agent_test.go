package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/bpf/tc"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testprogs"
)

const testprogsDir = "../../internal/testprogs"

// node is an agent's node for Reconcile tests: a veth end in a namespace
// of its own, a private bpffs, and the chain manager with every backend.
// Reconcile runs inside the namespace (netns.Namespace.Do), as the agent's
// reconcile thread does.
type node struct {
	t    *testing.T
	pair *netns.Pair
	mgr  *chain.Manager
	a    *agent.Agent
}

func newNode(t *testing.T) *node {
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	mgr, err := chain.New(chain.Options{
		BPFFS: bpffs, StateDir: t.TempDir(), ConfigDir: t.TempDir(),
		Sources:  &chain.Sources{BaseDir: testprogsDir},
		Backends: []chain.Backend{dispatcher.New(nil), tailcall.New(), tc.NewTCX(), tc.NewTC()},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Reconcile is called directly; the source is never run.
	a, err := agent.New(agent.Options{Manager: mgr, Source: staticSource{}})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, pair: netns.NewPair(t), mgr: mgr, a: a}
	t.Cleanup(func() { n.reconcile(agent.Desired{}) })
	return n
}

type staticSource struct{}

func (staticSource) Name() string { return "static" }
func (staticSource) Run(ctx context.Context, _ func(agent.Desired)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (n *node) reconcile(d agent.Desired) (res agent.Result, err error) {
	n.t.Helper()
	if derr := n.pair.B.Do(func() error {
		res, err = n.a.Reconcile(context.Background(), d)
		return nil
	}); derr != nil {
		n.t.Fatal(derr)
	}
	return res, err
}

// running is the program IDs on the veth's XDP hook (nil: none).
func (n *node) running() []uint32 {
	n.t.Helper()
	var ids []uint32
	if err := n.pair.B.Do(func() error {
		hs, err := n.mgr.HookStatus(context.Background(), "", n.pair.BIf, bpf.HookXDP)
		if hs != nil {
			for _, p := range hs.Programs {
				ids = append(ids, uint32(p.ProgramID))
			}
		}
		return err
	}); err != nil {
		n.t.Fatal(err)
	}
	return ids
}

func passChain(t *testing.T, owner, iface string) agent.Chain {
	data, err := os.ReadFile(filepath.Join(testprogsDir, "xdp_pass.o"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return agent.Chain{
		Owner: owner, Generation: 1, Hook: bpf.HookXDP,
		Interfaces: agent.InterfaceSelector{Names: []string{iface}},
		Programs: []chain.LockedProgram{{
			Name: "pass", Path: "xdp_pass.o", Object: "sha256:" + hex.EncodeToString(sum[:]),
			Function: "xdp_pass", Priority: 10, ProceedOn: []string{"pass"},
		}},
	}
}

func reasons(res agent.Result) map[string]string {
	out := map[string]string{}
	for _, c := range res.Chains {
		r := c.Reason
		if c.Applied {
			r = "Applied"
		}
		out[c.Owner+" "+c.Interface] = r
	}
	return out
}

// Two owners claiming one hook both report Conflict and the hook stays as
// it runs; when one gives up, the other gets it.
func TestReconcileConflict(t *testing.T) {
	n := newNode(t)
	iface := n.pair.BIf
	a, b := passChain(t, "ChainSet/a", iface), passChain(t, "ChainSet/b", iface)

	res, err := n.reconcile(agent.Desired{Chains: []agent.Chain{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ChainSet/a " + iface: agent.ReasonConflict, "ChainSet/b " + iface: agent.ReasonConflict}
	if got := reasons(res); !mapsEqual(got, want) {
		t.Errorf("two owners on a free hook: %v, want %v", got, want)
	}
	if ids := n.running(); ids != nil {
		t.Errorf("a contested hook got a chain: %v", ids)
	}

	res, err = n.reconcile(agent.Desired{Chains: []agent.Chain{a}})
	if err != nil {
		t.Fatal(err)
	}
	ids := n.running()
	if len(res.Chains) != 1 || !res.Chains[0].Applied || len(ids) != 1 || len(res.Chains[0].Programs) != 1 || res.Chains[0].Programs[0].ID != ids[0] {
		t.Fatalf("one owner: %+v, running %v", res, ids)
	}

	// b claims it too: both Conflict, a's chain runs on unchanged.
	res, _ = n.reconcile(agent.Desired{Chains: []agent.Chain{a, b}})
	if got := reasons(res); !mapsEqual(got, want) {
		t.Errorf("b claims a's hook: %v, want %v", got, want)
	}
	if now := n.running(); !slices.Equal(now, ids) {
		t.Errorf("a contested hook changed: %v, was %v", now, ids)
	}

	// a gives up: b gets the hook (a's chain is pruned first).
	res, err = n.reconcile(agent.Desired{Chains: []agent.Chain{b}})
	if err != nil {
		t.Fatal(err)
	}
	if got := reasons(res); !mapsEqual(got, map[string]string{"ChainSet/b " + iface: "Applied"}) {
		t.Errorf("after a gave up: %v", got)
	}
	if now := n.running(); len(now) != 1 || slices.Equal(now, ids) {
		t.Errorf("b's chain: %v (a's was %v)", now, ids)
	}

	// Applying the same again changes nothing (same IDs).
	before := n.running()
	if _, err := n.reconcile(agent.Desired{Chains: []agent.Chain{b}}); err != nil {
		t.Fatal(err)
	}
	if now := n.running(); !slices.Equal(now, before) {
		t.Errorf("an unchanged reconcile reloaded: %v, was %v", now, before)
	}

	// Nothing wanted: the agent's chains go.
	if _, err := n.reconcile(agent.Desired{}); err != nil {
		t.Fatal(err)
	}
	if now := n.running(); now != nil {
		t.Errorf("after an empty desired state: %v", now)
	}
}

// A hook running a program another tool attached is a Conflict, and is
// left alone.
func TestReconcileForeignHook(t *testing.T) {
	n := newNode(t)
	iface := n.pair.BIf
	spec, err := testprogs.Spec("xdp_pass")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	prog := coll.Programs["xdp_pass"]
	if err := n.pair.B.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, prog.FD(), unix.XDP_FLAGS_SKB_MODE)
	}); err != nil {
		t.Fatal(err)
	}
	res, _ := n.reconcile(agent.Desired{Chains: []agent.Chain{passChain(t, "ChainSet/a", iface)}})
	if got := reasons(res); got["ChainSet/a "+iface] != agent.ReasonConflict {
		t.Errorf("a hook running another tool's program: %+v, want Conflict", res)
	}
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	if err := n.pair.B.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		if l.Attrs().Xdp == nil || l.Attrs().Xdp.ProgId != uint32(id) {
			t.Errorf("the other tool's program %d was replaced: %+v", id, l.Attrs().Xdp)
		}
		return netlink.LinkSetXdpFdWithFlags(l, -1, unix.XDP_FLAGS_SKB_MODE)
	}); err != nil {
		t.Fatal(err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// primaryNodeInterface is the interface with the node's InternalIP, as the
// source reports it.
func TestReconcilePrimaryNodeInterface(t *testing.T) {
	n := newNode(t)
	c := passChain(t, "ChainSet/a", "")
	c.Interfaces = agent.InterfaceSelector{PrimaryNodeInterface: true}

	res, err := n.reconcile(agent.Desired{Chains: []agent.Chain{c}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Chains) != 1 || res.Chains[0].Reason != agent.ReasonInterfaceMissing {
		t.Errorf("without a node IP: %+v", res.Chains)
	}
	// The address the Node object gives (status.addresses), wherever the
	// agent runs: the interface is looked up in the agent's namespace.
	res, err = n.reconcile(agent.Desired{Chains: []agent.Chain{c}, NodeIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), n.pair.BAddr}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Chains) != 1 || !res.Chains[0].Applied || res.Chains[0].Interface != n.pair.BIf || len(n.running()) != 1 {
		t.Errorf("with node IP %v (on %s): %+v", n.pair.BAddr, n.pair.BIf, res.Chains)
	}
}

// runningIn is the program IDs on iface's XDP hook in the network
// namespace at path (nil: none).
func (n *node) runningIn(path, iface string) []uint32 {
	n.t.Helper()
	var ids []uint32
	if err := n.pair.B.Do(func() error {
		hs, err := n.mgr.HookStatus(context.Background(), path, iface, bpf.HookXDP)
		if hs != nil {
			for _, p := range hs.Programs {
				ids = append(ids, uint32(p.ProgramID))
			}
		}
		return err
	}); err != nil {
		n.t.Fatal(err)
	}
	return ids
}

// A chain in another network namespace: its selector is evaluated on the
// links inside it, it is applied there with pins keyed by that namespace,
// a namespace that does not exist yet is InterfaceMissing without
// disturbing the other chains, and the chain comes when it appears.
func TestReconcileNetns(t *testing.T) {
	n := newNode(t)
	host := passChain(t, "ChainSet/host", n.pair.BIf)
	other := netns.NewPair(t) // its A end: a namespace of its own
	inNS := passChain(t, "ChainSet/pod", "/kf.*/")
	inNS.Netns = other.A.Path()
	inNS.Interfaces.Exclude = []string{"lo"}
	missing := passChain(t, "ChainSet/later", "/.*/")
	missing.Netns = "kfm-missing-" + other.AIf // a NAME: /run/netns/NAME

	res, err := n.reconcile(agent.Desired{Chains: []agent.Chain{host, inNS, missing}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ChainSet/host " + n.pair.BIf: "Applied",
		"ChainSet/pod " + other.AIf:   "Applied",
		"ChainSet/later ":             agent.ReasonInterfaceMissing,
	}
	if got := reasons(res); !mapsEqual(got, want) {
		t.Fatalf("reconcile: %v, want %v\n%+v", got, want, res.Chains)
	}
	for _, c := range res.Chains {
		switch c.Owner {
		case "ChainSet/later":
			if c.Netns != "/run/netns/"+missing.Netns || !strings.Contains(c.Message, "does not exist") {
				t.Errorf("the chain in a missing namespace: %+v", c)
			}
		case "ChainSet/pod":
			if c.Netns != other.A.Path() || len(c.Programs) != 1 || c.Programs[0].ID == 0 {
				t.Errorf("the chain in %s: %+v", other.A.Path(), c)
			}
		}
	}
	podIDs := n.runningIn(other.A.Path(), other.AIf)
	if len(podIDs) != 1 {
		t.Fatalf("no chain on %s in %s: %v", other.AIf, other.A.Path(), podIDs)
	}
	// The agent's own namespace has no interface of that name: nothing
	// leaked there.
	if ids := n.running(); len(ids) != 1 {
		t.Errorf("the host chain: %v", ids)
	}
	// What the kernel runs in that namespace, seen from inside it.
	if err := other.A.Do(func() error {
		l, err := netlink.LinkByName(other.AIf)
		if err != nil {
			return err
		}
		if l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
			t.Errorf("%s in %s has no XDP program", other.AIf, other.A.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A second interface inside the namespace gets the chain.
	extra := "kfx" + other.AIf[3:]
	if err := other.A.Do(func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: extra}, PeerName: "peer" + other.AIf[3:]})
	}); err != nil {
		t.Fatal(err)
	}
	res, _ = n.reconcile(agent.Desired{Chains: []agent.Chain{host, inNS, missing}})
	want["ChainSet/pod "+extra] = "Applied"
	if got := reasons(res); !mapsEqual(got, want) {
		t.Fatalf("after %s appeared: %v, want %v", extra, got, want)
	}
	if ids := n.runningIn(other.A.Path(), extra); len(ids) != 1 {
		t.Errorf("no chain on %s: %v", extra, ids)
	}
	if now := n.runningIn(other.A.Path(), other.AIf); !slices.Equal(now, podIDs) {
		t.Errorf("the chain on %s changed: %v, was %v", other.AIf, now, podIDs)
	}

	// The owner gives the namespace up: its chains go, pins with them.
	res, err = n.reconcile(agent.Desired{Chains: []agent.Chain{host}})
	if err != nil {
		t.Fatal(err)
	}
	if got := reasons(res); !mapsEqual(got, map[string]string{"ChainSet/host " + n.pair.BIf: "Applied"}) {
		t.Errorf("after the pod chain went: %v", got)
	}
	for _, iface := range []string{other.AIf, extra} {
		if ids := n.runningIn(other.A.Path(), iface); ids != nil {
			t.Errorf("%s still runs %v", iface, ids)
		}
	}
}
