package main

// End-to-end tests of kfm agent --source kubernetes: a real control plane
// (etcd and kube-apiserver through envtest, with kfm's CRDs) and one agent
// process per simulated node. Each node is a network namespace of its own
// with a veth pair (the agent runs in one end's namespace, the test sends
// packets from the other), its own config directory (policy.yaml), state
// directory, cache and bpffs. The veth end of every node is renamed to the
// same name, as a fleet's nodes all have an eth0, so that one ChainSet
// names it for all of them.
//
// The agents reach the API server on 127.0.0.1 of the test's namespace:
// the test child enters the node's namespace on its main thread only (see
// runAsKFM), and client-go's connections go out from other threads.

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent/kubernetes"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
	"github.com/kfm-project/kfm/internal/controlplane"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// nodeIface is the name every simulated node's managed interface gets.
const nodeIface = "kfmeth0"

// k8sNode is one simulated node: a host view of its own namespace and
// directories, sharing the test's registry and signing key.
type k8sNode struct {
	*host
	name  string
	agent *agentProc
}

// kfmFlags point a kfm run at the node's own directories.
func (n *k8sNode) kfmFlags() []string {
	return []string{"--config-dir", n.configDir, "--state-dir", n.stateDir, "--bpffs", n.bpffs}
}

// chain is the names and kernel program IDs of the chain on the node's
// XDP hook (nil when nothing runs), from kfm status.
func (n *k8sNode) chain() ([]string, []int64) {
	n.t.Helper()
	out := n.mustKFM(append([]string{"status", "-o", "json"}, n.kfmFlags()...)...)
	var all []chain.HookStatus
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		n.t.Fatalf("%s: status -o json: %v\n%s", n.name, err, out)
	}
	hs := hookOf(all, nodeIface, "xdp")
	if hs == nil {
		return nil, nil
	}
	var names []string
	var ids []int64
	for _, p := range hs.Programs {
		names = append(names, p.Name)
		ids = append(ids, int64(p.ProgramID))
	}
	return names, ids
}

// newK8sNode makes node name: a namespace pair with the managed end
// renamed to nodeIface, its own directories and bpffs, and a policy
// trusting h.pub.
func newK8sNode(t testing.TB, h *host, name string) *k8sNode {
	t.Helper()
	nh := *h
	nh.sender, nh.receivers = nil, nil
	nh.pair = netns.NewPair(t)
	nh.bpffs = testenv.BPFFS(t)
	nh.configDir, nh.stateDir, nh.cacheDir = t.TempDir(), t.TempDir(), t.TempDir()
	if err := nh.pair.B.Do(func() error {
		l, err := netlink.LinkByName(nh.pair.BIf)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetDown(l); err != nil {
			return err
		}
		if err := netlink.LinkSetName(l, nodeIface); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatalf("rename %s to %s: %v", nh.pair.BIf, nodeIface, err)
	}
	nh.pair.BIf, nh.iface = nodeIface, nodeIface
	nh.trust(h.pub)
	return &k8sNode{host: &nh, name: name}
}

// startAgent starts the node's agent with the kubernetes source.
func (n *k8sNode) startAgent(kubeconfig string) {
	n.t.Helper()
	env := []string{"KFM_CONFIG_DIR=" + n.configDir, "KFM_STATE_DIR=" + n.stateDir, "KFM_BPFFS=" + n.bpffs, "KFM_CACHE_DIR=" + n.cacheDir}
	n.agent = n.startAgentEnv(env, "--source", "kubernetes", "--node-name", n.name, "--kubeconfig", kubeconfig,
		"--drift-interval", "2s", "--retry-min", "200ms", "--retry-max", "2s")
}

// writeKubeconfig writes a kubeconfig file for cfg (envtest's admin user).
func writeKubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// fleet is the control plane and the simulated nodes.
type fleet struct {
	t     testing.TB
	h     *host
	c     client.Client
	nodes []*k8sNode
}

func (f *fleet) ctx() context.Context { return context.Background() }

// nodeStatus is the ChainSetNodeStatus of chainset on node (nil if none).
func (f *fleet) nodeStatus(chainset, node string) *v1alpha1.ChainSetNodeStatus {
	f.t.Helper()
	var l v1alpha1.ChainSetNodeStatusList
	if err := f.c.List(f.ctx(), &l, client.MatchingLabels{kubernetes.LabelChainSet: chainset, kubernetes.LabelNode: node}); err != nil {
		f.t.Fatal(err)
	}
	if len(l.Items) == 0 {
		return nil
	}
	return &l.Items[0]
}

// chainSet reads a ChainSet.
func (f *fleet) chainSet(name string) *v1alpha1.ChainSet {
	f.t.Helper()
	var cs v1alpha1.ChainSet
	if err := f.c.Get(f.ctx(), client.ObjectKey{Name: name}, &cs); err != nil {
		f.t.Fatal(err)
	}
	return &cs
}

// setSpec updates the spec of ChainSet name, retrying while the agents'
// status writes make the read copy stale, and returns the updated object.
func (f *fleet) setSpec(name string, spec v1alpha1.ChainSetSpec) *v1alpha1.ChainSet {
	f.t.Helper()
	var cs *v1alpha1.ChainSet
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cs = f.chainSet(name)
		cs.Spec = *spec.DeepCopy()
		return f.c.Update(f.ctx(), cs)
	})
	if err != nil {
		f.t.Fatalf("update ChainSet %s: %v", name, err)
	}
	return cs
}

// reportsApplied reports whether node's status for cs says Applied at the
// ChainSet's generation, with the programs names, and the kernel IDs the
// node runs.
func (f *fleet) reportsApplied(cs *v1alpha1.ChainSet, n *k8sNode, names []string) bool {
	st := f.nodeStatus(cs.Name, n.name)
	if st == nil || st.Status.ObservedGeneration != cs.Generation || !meta.IsStatusConditionTrue(st.Status.Conditions, v1alpha1.ConditionApplied) {
		return false
	}
	if len(st.Status.Chains) != 1 || !st.Status.Chains[0].Applied {
		return false
	}
	running, ids := n.chain()
	var gotNames []string
	var gotIDs []int64
	for _, p := range st.Status.Chains[0].Programs {
		gotNames = append(gotNames, p.Name)
		gotIDs = append(gotIDs, p.ID)
	}
	return slices.Equal(gotNames, names) && slices.Equal(running, names) && slices.Equal(gotIDs, ids)
}

// logs is every agent's log.
func (f *fleet) logs() string {
	var b strings.Builder
	for _, n := range f.nodes {
		if n.agent != nil {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", n.name, n.agent.stderr.String())
		}
	}
	return b.String()
}

// rollout waits until every node of nodes reports cs (at its current
// generation) Applied with names, and returns how long it took.
func (f *fleet) rollout(name string, nodes []*k8sNode, names []string) time.Duration {
	f.t.Helper()
	start := time.Now()
	f.h.eventually(60*time.Second, fmt.Sprintf("ChainSet %s rolls out %v", name, names), func() bool {
		cs := f.chainSet(name)
		for _, n := range nodes {
			if !f.reportsApplied(cs, n, names) {
				return false
			}
		}
		return true
	}, f.logs)
	return time.Since(start)
}

// newFleet starts a control plane and n nodes labelled role=edge, each
// with its agent running, and publishes the sample programs count and
// portfilter, signed.
func newFleet(t testing.TB, n int) *fleet {
	h := newHost(t)
	cfg := controlplane.Start(t)
	kubeconfig := writeKubeconfig(t, cfg)
	scheme, err := kubernetes.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, h: h, c: c}
	ctx := context.Background()
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	for i := range n {
		name := fmt.Sprintf("node-%d", i)
		n := newK8sNode(t, h, name)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"role": "edge", "kubernetes.io/hostname": name}}}
		if err := c.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.pair.BAddr.String()}}
		if err := c.Status().Update(ctx, node); err != nil {
			t.Fatal(err)
		}
		f.nodes = append(f.nodes, n)
	}
	for _, n := range f.nodes {
		n.startAgent(kubeconfig)
	}
	return f
}

// chainSetOf writes kfm.yaml with one XDP chain of progs on nodeIface,
// locks it, and returns the ChainSet kfm lock --chainset makes of it:
// programs pinned by digest and signer.
func (f *fleet) chainSetOf(name, selector string, progs ...agentProg) *v1alpha1.ChainSet {
	f.t.Helper()
	f.h.writeProject([]string{nodeIface}, progs...)
	out := f.h.mustKFM("lock", "--chainset", name, "--node-selector", selector)
	var cs v1alpha1.ChainSet
	if err := yaml.UnmarshalStrict([]byte(out), &cs); err != nil {
		f.t.Fatalf("kfm lock --chainset: %v\n%s", err, out)
	}
	return &cs
}

// fleetSize is how many nodes the fleet tests simulate (the five).
const fleetSize = 5

func TestAgentKubernetes(t *testing.T) {
	f := newFleet(t, fleetSize)
	const all = fleetSize
	h, c, ctx := f.h, f.c, context.Background()
	chainSetOf := f.chainSetOf
	count := agentProg{"count", h.reg.Ref("net/count", "1.0.0"), ""}
	filter := agentProg{"portfilter", h.reg.Ref("net/portfilter", "1.0.0"), "port: '7777'"}

	// 1. A ChainSet selecting every node rolls out to all of them.
	web := chainSetOf("web", "role=edge", filter)
	if err := c.Create(ctx, web); err != nil {
		t.Fatalf("create ChainSet: %v", err)
	}
	d := f.rollout("web", f.nodes, []string{"portfilter"})
	t.Logf("first rollout to %d nodes: %v", len(f.nodes), d.Round(time.Millisecond))
	f.h.eventually(20*time.Second, fmt.Sprintf("the ChainSet counts %d nodes applied", all), func() bool {
		st := f.chainSet("web").Status
		return st.SelectedNodes == all && st.AppliedNodes == all && st.FailedNodes == 0
	}, func() string { return fmt.Sprintf("%+v\n%s", f.chainSet("web").Status, f.logs()) })
	n0 := f.nodes[0]
	if got := n0.traffic(20, 7777, 8888); got[7777] != 0 || got[8888] != 20 {
		t.Errorf("%s after the rollout: %d datagrams to the filtered port 7777 (want 0), %d to 8888 (want 20)", n0.name, got[7777], got[8888])
	}

	// A new generation: a second program before the filter.
	next := chainSetOf("web", "role=edge", count, filter)
	gen := f.chainSet("web").Generation
	start := time.Now()
	web = f.setSpec("web", next.Spec)
	if web.Generation == gen {
		t.Fatalf("the update did not make a new generation (%d)", gen)
	}
	f.rollout("web", f.nodes, []string{"count", "portfilter"})
	t.Logf("rollout of generation %d to %d nodes: %v from the update until every node reported Applied", web.Generation, len(f.nodes), time.Since(start).Round(time.Millisecond))
	if got := n0.traffic(20, 7777, 8888); got[7777] != 0 || got[8888] != 20 {
		t.Errorf("%s after the second rollout: %d datagrams to port 7777 (want 0), %d to 8888 (want 20)", n0.name, got[7777], got[8888])
	}

	// 2. A node whose policy refuses the signer keeps its chain and says
	// why; the others apply the next generation.
	n2 := f.nodes[2]
	_, before := n2.chain()
	_, otherPub := keyPair(t, "other-password")
	n2.trust(otherPub)
	refused := func() bool {
		st := f.nodeStatus("web", n2.name)
		if st == nil || st.Status.ObservedGeneration != f.chainSet("web").Generation {
			return false
		}
		d := meta.FindStatusCondition(st.Status.Conditions, v1alpha1.ConditionDegraded)
		return d != nil && d.Status == metav1.ConditionTrue && d.Reason == "VerificationFailed" &&
			!meta.IsStatusConditionTrue(st.Status.Conditions, v1alpha1.ConditionApplied)
	}
	// The agent restarts with the new policy and judges what runs again.
	f.h.eventually(30*time.Second, n2.name+" reports Degraded/VerificationFailed under its new policy", refused, f.logs)
	next = chainSetOf("web", "role=edge", count, agentProg{"portfilter", filter.ref, "port: '9999'"})
	f.setSpec("web", next.Spec)
	f.rollout("web", slices.Delete(slices.Clone(f.nodes), 2, 3), []string{"count", "portfilter"})
	f.h.eventually(30*time.Second, n2.name+" reports Degraded/VerificationFailed for the new generation", refused, f.logs)
	if _, now := n2.chain(); !slices.Equal(now, before) {
		t.Errorf("%s: program IDs after its policy refused the signer: %v, before %v", n2.name, now, before)
	}
	if got := n2.traffic(20, 7777, 9999); got[7777] != 0 || got[9999] != 20 {
		t.Errorf("%s keeps the old filter: %d datagrams to port 7777 (want 0), %d to 9999 (want 20)", n2.name, got[7777], got[9999])
	}
	if got := n0.traffic(20, 7777, 9999); got[7777] != 20 || got[9999] != 0 {
		t.Errorf("%s runs the new filter: %d datagrams to port 7777 (want 20), %d to 9999 (want 0)", n0.name, got[7777], got[9999])
	}
	f.h.eventually(20*time.Second, fmt.Sprintf("the ChainSet counts %d applied, 1 failed", all-1), func() bool {
		st := f.chainSet("web").Status
		return st.SelectedNodes == all && st.AppliedNodes == all-1 && st.FailedNodes == 1
	}, func() string { return fmt.Sprintf("%+v\n%s", f.chainSet("web").Status, f.logs()) })
	// Trusted again, it catches up.
	n2.trust(h.pub)
	f.rollout("web", f.nodes, []string{"count", "portfilter"})

	// 3. A node whose labels no longer match loses the chain, and gets it
	// back when they match again.
	n1 := f.nodes[1]
	relabel := func(role string) {
		t.Helper()
		var node corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: n1.name}, &node); err != nil {
			t.Fatal(err)
		}
		node.Labels["role"] = role
		if err := c.Update(ctx, &node); err != nil {
			t.Fatal(err)
		}
	}
	if len(n1.pinTree()) == 0 {
		t.Fatalf("no pins under %s while %s runs the chain", n1.bpffs, n1.name)
	}
	relabel("core")
	f.h.eventually(30*time.Second, n1.name+" loses the chain when its labels no longer match", func() bool {
		names, _ := n1.chain()
		return names == nil && f.nodeStatus("web", n1.name) == nil && len(n1.pinTree()) == 0
	}, func() string { return fmt.Sprintf("pins %v\n%s", n1.pinTree(), f.logs()) })
	f.h.eventually(20*time.Second, fmt.Sprintf("the ChainSet counts %d nodes", all-1), func() bool {
		st := f.chainSet("web").Status
		return st.SelectedNodes == all-1 && st.AppliedNodes == all-1
	}, func() string { return fmt.Sprintf("%+v\n%s", f.chainSet("web").Status, f.logs()) })
	if names, _ := f.nodes[0].chain(); !slices.Equal(names, []string{"count", "portfilter"}) {
		t.Errorf("%s runs %v after %s was relabelled", f.nodes[0].name, names, n1.name)
	}
	relabel("edge")
	f.rollout("web", f.nodes, []string{"count", "portfilter"})

	// 5. Two ChainSets claiming the same hook on one node: both report
	// Conflict there, steadily, and what ran keeps running.
	_, before = n0.chain()
	clash := chainSetOf("clash", "kubernetes.io/hostname="+n0.name, count)
	if err := c.Create(ctx, clash); err != nil {
		t.Fatal(err)
	}
	conflict := func(cs string) (string, bool) {
		st := f.nodeStatus(cs, n0.name)
		if st == nil {
			return "", false
		}
		d := meta.FindStatusCondition(st.Status.Conditions, v1alpha1.ConditionDegraded)
		return st.ResourceVersion, d != nil && d.Status == metav1.ConditionTrue && d.Reason == "Conflict"
	}
	f.h.eventually(30*time.Second, "both ChainSets report Conflict on "+n0.name, func() bool {
		_, a := conflict("web")
		_, b := conflict("clash")
		return a && b
	}, f.logs)
	rvWeb, _ := conflict("web")
	rvClash, _ := conflict("clash")
	// Three drift intervals: the agent reconciles and reports again.
	for range 3 {
		time.Sleep(2 * time.Second)
		rw, a := conflict("web")
		rc, b := conflict("clash")
		if !a || !b || rw != rvWeb || rc != rvClash {
			t.Fatalf("the conflict flaps: web Conflict=%v (resourceVersion %s, was %s), clash Conflict=%v (%s, was %s)\n%s", a, rw, rvWeb, b, rc, rvClash, f.logs())
		}
	}
	if _, now := n0.chain(); !slices.Equal(now, before) {
		t.Errorf("%s: program IDs during the conflict: %v, before %v", n0.name, now, before)
	}
	for _, n := range f.nodes[1:] {
		if st := f.nodeStatus("clash", n.name); st != nil {
			t.Errorf("ChainSet clash has a status on %s, which it does not select", n.name)
		}
	}
	if err := c.Delete(ctx, clash); err != nil {
		t.Fatal(err)
	}
	f.rollout("web", f.nodes, []string{"count", "portfilter"})

	// 4. Deleting the ChainSet cleans every node: chains, pins, and the
	// status objects (the agents delete them; envtest runs no garbage
	// collector).
	if err := c.Delete(ctx, f.chainSet("web")); err != nil {
		t.Fatal(err)
	}
	f.h.eventually(30*time.Second, "every node is clean after the ChainSet is deleted", func() bool {
		for _, n := range f.nodes {
			if names, _ := n.chain(); names != nil || len(n.pinTree()) != 0 {
				return false
			}
		}
		var l v1alpha1.ChainSetNodeStatusList
		if err := c.List(ctx, &l); err != nil {
			t.Fatal(err)
		}
		return len(l.Items) == 0
	}, f.logs)
}

// BenchmarkAgentKubernetesRollout measures the time from an update of a
// ChainSet (a param change, so every node loads a new program) until all
// fleetSize nodes report the new generation Applied with the programs they
// run.
func BenchmarkAgentKubernetesRollout(b *testing.B) {
	f := newFleet(b, fleetSize)
	ctx := context.Background()
	ref := f.h.reg.Ref("net/portfilter", "1.0.0")
	specs := []v1alpha1.ChainSetSpec{
		f.chainSetOf("web", "role=edge", agentProg{"portfilter", ref, "port: '7777'"}).Spec,
		f.chainSetOf("web", "role=edge", agentProg{"portfilter", ref, "port: '9999'"}).Spec,
	}
	cs := f.chainSetOf("web", "role=edge", agentProg{"portfilter", ref, "port: '7777'"})
	if err := f.c.Create(ctx, cs); err != nil {
		b.Fatal(err)
	}
	f.rollout("web", f.nodes, []string{"portfilter"})
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		f.setSpec("web", specs[(i+1)%2])
		f.rollout("web", f.nodes, []string{"portfilter"})
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/rollout")
}
