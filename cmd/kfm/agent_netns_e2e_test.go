package main

// End-to-end tests of kfm agent with chains in other network namespaces
// (kfm.yaml's netns:, a ChainSet's chains[].netns): the namespace is one
// the test creates (and deletes) while the agent runs, as a container
// runtime creates and deletes a pod's.

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
)

// podNetns is a named network namespace (/run/netns/NAME) that the test
// creates when it wants to, and deletes when it wants to or when the test
// ends. Unlike internal/netns, it keeps no handle open, so deleting it
// destroys the namespace unless something else (say, a leaky agent) keeps
// it alive.
type podNetns struct {
	t    testing.TB
	name string
}

// newPodNetnsName picks a random name for a namespace that does not exist
// yet; create makes it.
func newPodNetnsName(t testing.TB) *podNetns {
	return &podNetns{t: t, name: fmt.Sprintf("kfm-%08x-p", rand.Uint32())}
}

func (n *podNetns) path() string { return filepath.Join(chain.NetnsDir, n.name) }

// create makes the namespace, deleted when the test ends.
func (n *podNetns) create() {
	n.t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		n.t.Fatal(err)
	}
	defer orig.Close()
	h, err := vnetns.NewNamed(n.name)
	if err != nil {
		n.t.Fatalf("create netns %s: %v", n.name, err)
	}
	h.Close()
	if err := vnetns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the test's network namespace: %v", err))
	}
	n.t.Cleanup(func() { vnetns.DeleteNamed(n.name) })
}

// delete deletes it as `ip netns del` does.
func (n *podNetns) delete() {
	n.t.Helper()
	if err := vnetns.DeleteNamed(n.name); err != nil {
		n.t.Fatalf("delete netns %s: %v", n.name, err)
	}
}

// do runs fn on a thread inside the namespace.
func (n *podNetns) do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := vnetns.GetFromName(n.name)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := vnetns.Set(h); err != nil {
		return err
	}
	defer func() {
		if err := vnetns.Set(orig); err != nil {
			panic(fmt.Sprintf("cannot return to the test's network namespace: %v", err))
		}
	}()
	return fn()
}

// addVeth adds a veth pair with both ends inside the namespace.
func (n *podNetns) addVeth(a, b string) {
	n.t.Helper()
	if err := n.do(func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b})
	}); err != nil {
		n.t.Fatalf("add veth %s/%s in %s: %v", a, b, n.name, err)
	}
}

// delLink deletes a link inside the namespace (a veth with its peer).
func (n *podNetns) delLink(name string) {
	n.t.Helper()
	if err := n.do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		n.t.Fatalf("delete %s in %s: %v", name, n.name, err)
	}
}

// nsHook is the status of iface's XDP hook in the namespace at path (nil
// when nothing runs there), from kfm status -o json; flags point it at a
// node's directories. Like every kfm command, status first releases the
// state of interfaces that are gone: tests of the agent's own cleanup
// look at the host state and the pins instead.
func (h *host) nsHook(path, iface string, flags ...string) *chain.HookStatus {
	h.t.Helper()
	args := append([]string{"status", "-o", "json", "--config-dir", h.t.TempDir()}, flags...)
	out := h.mustKFM(args...)
	var all []chain.HookStatus
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		h.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	for i := range all {
		if all[i].Netns == path && all[i].Interface == iface && all[i].Hook == "xdp" {
			return &all[i]
		}
	}
	return nil
}

// programs is the names in run order and the kernel IDs (with the root's)
// of a hook status.
func programs(hs *chain.HookStatus) ([]string, []ebpf.ProgramID) {
	if hs == nil {
		return nil, nil
	}
	var names []string
	var ids []ebpf.ProgramID
	for _, p := range hs.Programs {
		names = append(names, p.Name)
		ids = append(ids, p.ProgramID)
	}
	return names, append(ids, hs.RootID)
}

// nsPins lists the files under bpffs that key pins by a namespace other
// than the host's (<bpffs>/kfm/<store>/ns-<cookie>/...).
func nsPins(t testing.TB, bpffs string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(bpffs, "kfm"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(path, "/ns-") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil && !strings.Contains(err.Error(), "no such file") {
		t.Fatal(err)
	}
	return out
}

// gone reports whether none of ids is a program the kernel still has.
func gone(ids []ebpf.ProgramID) bool {
	for _, id := range ids {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			return false
		}
	}
	return true
}

// TestAgentNetns runs kfm agent --source DIR with a kfm.yaml that chains an
// interface of the agent's namespace and, by /regex/, the interfaces of a
// pod's namespace that does not exist yet: the host chain applies, the
// other reports InterfaceMissing; when the namespace appears with a veth,
// the chain follows at once (the drift check is an hour away), as it does
// for a veth added later inside it; a veth deleted there releases its
// pins; deleting the namespace releases the rest, and the agent does not
// keep the dead namespace alive (its programs leave the kernel).
func TestAgentNetns(t *testing.T) {
	h := newHost(t)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	ref := h.reg.Ref("net/count", "1.0.0")
	pod := newPodNetnsName(t)
	h.writeConfig("kfm.yaml", fmt.Sprintf(`version: 1
chains:
  - interface: %s
    hook: xdp
    programs:
      - {name: count, ref: %s, priority: 10}
  - interface: /kfn.*/
    netns: %s
    hook: xdp
    programs:
      - {name: count, ref: %s, priority: 10}
`, h.iface, ref, pod.name, ref))
	h.mustKFM("lock")

	a := h.startAgent("--source", h.configDir, "--drift-interval", "1h")
	logs := a.stderr.String
	h.eventually(20*time.Second, "the host chain applies while the namespace is missing", func() bool {
		names, _ := h.xdpChain(h.iface)
		return slices.Equal(names, []string{"count"}) && a.metric(`kfm_reconcile_chains{state="InterfaceMissing"}`) == 1
	}, logs)
	if code, body := a.get("/readyz"); code != 200 {
		t.Errorf("/readyz with a namespace missing: %d %s (a missing namespace is a state, not a failure)", code, body)
	}
	_, hostIDs := h.xdpChain(h.iface)

	// The namespace appears, with a veth pair inside.
	start := time.Now()
	pod.create()
	pod.addVeth("kfn0a", "kfn0b")
	h.eventually(10*time.Second, "the chain reaches the new namespace's interfaces", func() bool {
		a, _ := programs(h.nsHook(pod.path(), "kfn0a"))
		b, _ := programs(h.nsHook(pod.path(), "kfn0b"))
		return slices.Equal(a, []string{"count"}) && slices.Equal(b, []string{"count"})
	}, logs)
	t.Logf("namespace created: chains attached inside it %v later", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(logs(), `"msg":"network namespace present","netns":"`+pod.path()+`"`) {
		t.Errorf("the agent did not log that it follows %s:\n%s", pod.path(), logs())
	}
	_, podIDs := programs(h.nsHook(pod.path(), "kfn0a"))
	// The programs really run inside the namespace, on its interface.
	if err := pod.do(func() error {
		l, err := netlink.LinkByName("kfn0a")
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x == nil || !x.Attached || ebpf.ProgramID(x.ProgId) != podIDs[len(podIDs)-1] {
			t.Errorf("XDP on kfn0a inside %s: %+v, want kfm's root program %d", pod.name, x, podIDs[len(podIDs)-1])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pinsTwo := nsPins(t, h.bpffs)
	if len(pinsTwo) == 0 {
		t.Fatalf("no pins keyed by the pod's namespace under %s", h.bpffs)
	}

	// Hot-plug inside the namespace: a link subscription there.
	start = time.Now()
	pod.addVeth("kfn1a", "kfn1b")
	h.eventually(10*time.Second, "a veth added inside the namespace gets the chain", func() bool {
		a, _ := programs(h.nsHook(pod.path(), "kfn1a"))
		return slices.Equal(a, []string{"count"})
	}, logs)
	t.Logf("hot-plug inside the namespace: chain attached %v after the veth was created", time.Since(start).Round(time.Millisecond))
	if len(h.hostState().Hooks) != 5 {
		t.Errorf("host state: %d hooks, want 5 (the host's and four in the namespace)", len(h.hostState().Hooks))
	}

	// A veth deleted inside the namespace: the agent releases its state
	// and pins (no kfm command runs meanwhile: that would prune too).
	pod.delLink("kfn1a")
	h.eventually(10*time.Second, "the agent releases the deleted veth's state and pins", func() bool {
		return len(h.hostState().Hooks) == 3 && len(nsPins(t, h.bpffs)) == len(pinsTwo)
	}, func() string {
		return fmt.Sprintf("hooks %+v\npins %v\n%s", h.hostState().Hooks, nsPins(t, h.bpffs), logs())
	})

	// The namespace is deleted: the agent lets go of it, so the namespace
	// dies with its veths and programs, and the agent releases the rest.
	pod.delete()
	h.eventually(15*time.Second, "the deleted namespace's chains are released and its programs leave the kernel", func() bool {
		return len(h.hostState().Hooks) == 1 && len(nsPins(t, h.bpffs)) == 0 && gone(podIDs)
	}, func() string {
		return fmt.Sprintf("hooks %+v\npins %v\nprograms %v gone: %v\n%s", h.hostState().Hooks, nsPins(t, h.bpffs), podIDs, gone(podIDs), logs())
	})
	h.eventually(10*time.Second, "the chain in the deleted namespace reports InterfaceMissing", func() bool {
		return a.metric(`kfm_reconcile_chains{state="InterfaceMissing"}`) == 1 && a.metric(`kfm_reconcile_chains{state="applied"}`) == 1
	}, logs)
	if _, now := h.xdpChain(h.iface); !slices.Equal(now, hostIDs) {
		t.Errorf("the host chain changed while the namespace came and went: %v, was %v", now, hostIDs)
	}

	// Re-created at the same path: a new namespace, chained afresh.
	pod.create()
	pod.addVeth("kfn2a", "kfn2b")
	h.eventually(10*time.Second, "the re-created namespace gets the chain", func() bool {
		a, _ := programs(h.nsHook(pod.path(), "kfn2a"))
		return slices.Equal(a, []string{"count"})
	}, logs)
}

// TestAgentKubernetesNetns runs one node's agent with the kubernetes source
// and a ChainSet of two chains: one on primaryNodeInterface (the interface
// that carries the Node object's InternalIP, found in the agent's own
// namespace) and one in a pod's namespace that does not exist yet. The
// node reports Degraded/InterfaceMissing for the second and runs the first;
// the namespace and a veth appear and the node reports Applied; a veth
// added later gets the chain; a new InternalIP moves primaryNodeInterface
// to the interface that gets that address; deleting the ChainSet removes
// every chain and pin.
func TestAgentKubernetesNetns(t *testing.T) {
	f := newFleet(t, 1)
	h, c, ctx, n := f.h, f.c, context.Background(), f.nodes[0]
	pod := newPodNetnsName(t)
	cs := f.chainSetOf("pods", "role=edge", agentProg{"count", h.reg.Ref("net/count", "1.0.0"), ""})
	host := cs.Spec.Chains[0]
	host.InterfaceSelector = v1alpha1.InterfaceSelector{PrimaryNodeInterface: true}
	inPod := *host.DeepCopy()
	inPod.InterfaceSelector = v1alpha1.InterfaceSelector{Names: []string{"/kfn.*/"}, Exclude: []string{"kfn0b"}}
	inPod.Netns = pod.path()
	cs.Spec.Chains = []v1alpha1.ChainSpec{host, inPod}
	if err := c.Create(ctx, cs); err != nil {
		t.Fatalf("create ChainSet: %v", err)
	}
	status := func() *v1alpha1.ChainSetNodeStatus { return f.nodeStatus("pods", n.name) }
	chains := func(st *v1alpha1.ChainSetNodeStatus) map[string]string {
		out := map[string]string{}
		if st == nil {
			return out
		}
		for _, ch := range st.Status.Chains {
			r := ch.Reason
			if ch.Applied {
				r = "Applied"
			}
			out[ch.Netns+":"+ch.Interface] = r
		}
		return out
	}
	desc := func() string { st := status(); return fmt.Sprintf("%+v\n%s", st, f.logs()) }
	h.eventually(30*time.Second, "primaryNodeInterface applied, the pod's namespace InterfaceMissing", func() bool {
		st := status()
		if st == nil || st.Status.ObservedGeneration != f.chainSet("pods").Generation {
			return false
		}
		d := meta.FindStatusCondition(st.Status.Conditions, v1alpha1.ConditionDegraded)
		got := chains(st)
		return d != nil && d.Status == "True" && d.Reason == "InterfaceMissing" &&
			got[":"+nodeIface] == "Applied" && got[pod.path()+":"] == "InterfaceMissing"
	}, desc)
	if names, _ := n.chain(); !slices.Equal(names, []string{"count"}) {
		t.Errorf("%s (the interface with the Node's InternalIP %v) runs %v", nodeIface, n.pair.BAddr, names)
	}

	pod.create()
	pod.addVeth("kfn0a", "kfn0b")
	want := map[string]string{":" + nodeIface: "Applied", pod.path() + ":kfn0a": "Applied"}
	h.eventually(20*time.Second, "the node reports Applied once the namespace exists", func() bool {
		st := status()
		return st != nil && meta.IsStatusConditionTrue(st.Status.Conditions, v1alpha1.ConditionApplied) && mapsEqual(chains(st), want)
	}, desc)
	flags := n.kfmFlags()
	if names, _ := programs(h.nsHook(pod.path(), "kfn0a", flags...)); !slices.Equal(names, []string{"count"}) {
		t.Errorf("kfn0a in %s runs %v", pod.path(), names)
	}
	if hs := h.nsHook(pod.path(), "kfn0b", flags...); hs != nil {
		t.Errorf("the excluded kfn0b runs %+v", hs.Programs)
	}

	start := time.Now()
	pod.addVeth("kfn1a", "kfn1b")
	want[pod.path()+":kfn1a"], want[pod.path()+":kfn1b"] = "Applied", "Applied"
	h.eventually(20*time.Second, "veths added inside the namespace get the chain and are reported", func() bool {
		return mapsEqual(chains(status()), want)
	}, desc)
	t.Logf("hot-plug inside a ChainSet's namespace: reported Applied %v after the veth was created", time.Since(start).Round(time.Millisecond))
	for _, st := range status().Status.Chains {
		if !st.Applied || len(st.Programs) != 1 || st.Programs[0].ID == 0 {
			t.Errorf("status of %s %s: %+v", st.Netns, st.Interface, st)
		}
	}

	// The Node's InternalIP changes to an address no interface has yet:
	// primaryNodeInterface is missing, and the chain leaves kfmeth0. The
	// address then appears on another interface (a netlink address event,
	// not a change of the Node): the chain follows it there.
	var node corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: n.name}, &node); err != nil {
		t.Fatal(err)
	}
	moved := netip.MustParseAddr("198.18.7.7")
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: moved.String()}}
	if err := c.Status().Update(ctx, &node); err != nil {
		t.Fatal(err)
	}
	delete(want, ":"+nodeIface)
	want[":"] = "InterfaceMissing"
	h.eventually(20*time.Second, "primaryNodeInterface missing after the InternalIP changed", func() bool {
		names, _ := n.chain()
		return names == nil && mapsEqual(chains(status()), want)
	}, desc)
	const other = "kfmeth1"
	if err := n.pair.B.Do(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: other}, PeerName: other + "p"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName(other)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: moved.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	}); err != nil {
		t.Fatal(err)
	}
	delete(want, ":")
	want[":"+other] = "Applied"
	h.eventually(20*time.Second, "the chain follows the InternalIP to "+other, func() bool {
		return mapsEqual(chains(status()), want)
	}, desc)
	if !strings.Contains(n.agent.stderr.String(), `"msg":"node address changed","netns":"","address":"`+moved.String()+`"`) {
		t.Errorf("the agent did not see the address event for %s:\n%s", moved, f.logs())
	}

	if err := c.Delete(ctx, f.chainSet("pods")); err != nil {
		t.Fatal(err)
	}
	h.eventually(30*time.Second, "deleting the ChainSet removes its chains everywhere", func() bool {
		var l v1alpha1.ChainSetNodeStatusList
		if err := c.List(ctx, &l, client.MatchingLabels{}); err != nil {
			t.Fatal(err)
		}
		names, _ := n.chain()
		return names == nil && len(l.Items) == 0 && len(nsPins(t, n.bpffs)) == 0 && len(n.pinTree()) == 0
	}, func() string { return fmt.Sprintf("pins %v\n%s", n.pinTree(), f.logs()) })
	for _, iface := range []string{"kfn0a", "kfn1a", "kfn1b"} {
		if hs := h.nsHook(pod.path(), iface, flags...); hs != nil {
			t.Errorf("%s in %s still runs %+v after the ChainSet was deleted", iface, pod.path(), hs.Programs)
		}
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
