package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
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
	res, err = n.reconcile(agent.Desired{Chains: []agent.Chain{c}, NodeIP: n.pair.BAddr})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Chains) != 1 || !res.Chains[0].Applied || res.Chains[0].Interface != n.pair.BIf || len(n.running()) != 1 {
		t.Errorf("with node IP %v (on %s): %+v", n.pair.BAddr, n.pair.BIf, res.Chains)
	}
}
