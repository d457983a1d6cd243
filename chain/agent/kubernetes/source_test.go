package kubernetes_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/kubernetes"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
	"github.com/kfm-project/kfm/internal/controlplane"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	objectA = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// program is a fully pinned program as kfm lock --chainset writes it.
func program(name string, prio int32) v1alpha1.Program {
	return v1alpha1.Program{
		Name: name, Ref: "registry.example/net/" + name, Resolved: "registry.example/net/" + name + ":stable",
		Digest: digestA, Object: objectA, Signer: &v1alpha1.Signer{Key: "SHA256:abc"},
		Function: "xdp_" + name, Priority: prio, ProceedOn: []string{"pass"},
	}
}

func chainSet(name string, selector map[string]string, chains ...v1alpha1.ChainSpec) *v1alpha1.ChainSet {
	cs := &v1alpha1.ChainSet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ChainSetSpec{Chains: chains}}
	if selector != nil {
		cs.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: selector}
	}
	return cs
}

func xdpChain(names ...string) v1alpha1.ChainSpec {
	return v1alpha1.ChainSpec{
		Hook:              "xdp",
		InterfaceSelector: v1alpha1.InterfaceSelector{Names: names},
		Programs:          []v1alpha1.Program{program("ratelimit", 10), program("count", 20)},
	}
}

// env is one control plane shared by the subtests of TestControlPlane.
type env struct {
	cfg *rest.Config
	c   client.Client
}

func newEnv(t *testing.T) *env {
	cfg := controlplane.Start(t)
	scheme, err := kubernetes.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &env{cfg: cfg, c: c}
}

// node creates a Node with labels and an InternalIP, deleted when t ends.
func (e *env) node(t *testing.T, name string, labels map[string]string, internalIP string) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := e.c.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.c.Delete(context.Background(), n) })
	if internalIP != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP}}
		if err := e.c.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (e *env) create(t *testing.T, cs *v1alpha1.ChainSet) *v1alpha1.ChainSet {
	t.Helper()
	if err := e.c.Create(context.Background(), cs); err != nil {
		t.Fatalf("create ChainSet %s: %v", cs.Name, err)
	}
	t.Cleanup(func() { _ = e.c.Delete(context.Background(), cs) })
	return cs
}

func (e *env) source(t *testing.T, node string) *kubernetes.Source {
	t.Helper()
	s, err := kubernetes.New(kubernetes.Options{Config: e.cfg, NodeName: node})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run starts s and returns a function that waits for a Desired that ok
// accepts.
func run(t *testing.T, s *kubernetes.Source) func(what string, ok func(agent.Desired) bool) agent.Desired {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan agent.Desired, 64)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(d agent.Desired) { updates <- d }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	var last agent.Desired
	return func(what string, ok func(agent.Desired) bool) agent.Desired {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			if ok(last) {
				return last
			}
			select {
			case last = <-updates:
			case err := <-done:
				t.Fatalf("Run ended while waiting for %s: %v", what, err)
			case <-timeout:
				t.Fatalf("no desired state with %s after 30 s; last: %+v", what, last)
			}
		}
	}
}

func owners(d agent.Desired) []string {
	var out []string
	for _, c := range d.Chains {
		sel := fmt.Sprint(c.Interfaces.Names)
		if c.Interfaces.PrimaryNodeInterface {
			sel += "+primary"
		}
		out = append(out, fmt.Sprintf("%s@%d:%s%s", c.Owner, c.Generation, c.Hook, sel))
	}
	return out
}

func TestControlPlane(t *testing.T) {
	e := newEnv(t)
	t.Run("Admission", e.testAdmission)
	t.Run("Desired", e.testDesired)
	t.Run("Status", e.testStatus)
	t.Run("Conflict", e.testConflict)
	t.Run("Cleanup", e.testCleanup)
}

// The API server refuses a ChainSet that does not pin every program, or
// that tries to say something a node's trust policy decides.
func (e *env) testAdmission(t *testing.T) {
	ctx := context.Background()
	edit := func(f func(*v1alpha1.ChainSet)) *v1alpha1.ChainSet {
		cs := chainSet("admission", map[string]string{"role": "edge"}, xdpChain("eth0"))
		f(cs)
		return cs
	}
	for _, tc := range []struct {
		name string
		cs   *v1alpha1.ChainSet
		want string // "" accepts
	}{
		{"pinned", edit(func(*v1alpha1.ChainSet) {}), ""},
		{"no digest", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains[0].Programs[1].Digest = "" }),
			"program has no digest: a ChainSet pins every program by the manifest digest in kfm.lock"},
		{"tag instead of digest", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains[0].Programs[0].Digest = "stable" }),
			`spec.chains[0].programs[0].digest: Invalid value: "stable"`},
		{"no object digest", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains[0].Programs[0].Object = "" }),
			"program has no object digest"},
		{"no signer", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains[0].Programs[0].Signer = nil }),
			"program has no signer"},
		{"empty signer", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains[0].Programs[0].Signer = &v1alpha1.Signer{} }),
			"signer is either a key or a keyless identity"},
		{"key and identity", edit(func(cs *v1alpha1.ChainSet) {
			cs.Spec.Chains[0].Programs[0].Signer = &v1alpha1.Signer{Key: "k", Subject: "s", Issuer: "i"}
		}), "signer is either a key or a keyless identity"},
		{"subject without issuer", edit(func(cs *v1alpha1.ChainSet) {
			cs.Spec.Chains[0].Programs[0].Signer = &v1alpha1.Signer{Subject: "s"}
		}), "a keyless signer needs both subject and issuer"},
		{"selector picks nothing", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains[0].InterfaceSelector = v1alpha1.InterfaceSelector{} }),
			"interfaceSelector picks nothing"},
		{"bad interface name", edit(func(cs *v1alpha1.ChainSet) {
			cs.Spec.Chains[0].InterfaceSelector.Names = []string{"a-name-longer-than-15"}
		}),
			"each name is an interface name (at most 15 characters) or a regular expression written /RE/"},
		{"regex", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains[0].InterfaceSelector.Names = []string{"/^veth[0-9a-f]+$/"} }), ""},
		{"primary interface in a netns", edit(func(cs *v1alpha1.ChainSet) {
			cs.Spec.Chains[0].InterfaceSelector.PrimaryNodeInterface = true
			cs.Spec.Chains[0].Netns = "/run/netns/pod1"
		}), "primaryNodeInterface is the node's own interface"},
		{"two chains on one hook", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains = append(cs.Spec.Chains, xdpChain("eth1")) }),
			"two chains of one ChainSet on the same hook and network namespace"},
		{"same hook in another netns", edit(func(cs *v1alpha1.ChainSet) {
			c := xdpChain("eth0")
			c.Netns = "/run/netns/pod1"
			cs.Spec.Chains = append(cs.Spec.Chains, c)
		}), ""},
		{"unknown hook", edit(func(cs *v1alpha1.ChainSet) { cs.Spec.Chains[0].Hook = "lwt" }), `Unsupported value: "lwt"`},
		{"mode on tc", edit(func(cs *v1alpha1.ChainSet) {
			cs.Spec.Chains[0].Hook = "tc-ingress"
			cs.Spec.Chains[0].Mode = "skb"
		}), "only XDP chains have a mode"},
		{"duplicate program", edit(func(cs *v1alpha1.ChainSet) {
			cs.Spec.Chains[0].Programs = append(cs.Spec.Chains[0].Programs, program("count", 30))
		}), "Duplicate value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := e.c.Create(ctx, tc.cs)
			if err == nil {
				_ = e.c.Delete(ctx, tc.cs)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted; want refusal %q", tc.want)
			case tc.want != "" && (!apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("refused with %v\nwant Invalid with %q", err, tc.want)
			}
		})
	}

	// A field that would weaken the node's trust policy does not exist:
	// the API server drops it, and with strict field validation (kubectl's
	// default) refuses it.
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(edit(func(*v1alpha1.ChainSet) {}))
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: u}
	obj.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("ChainSet"))
	prog := u["spec"].(map[string]any)["chains"].([]any)[0].(map[string]any)["programs"].([]any)[0].(map[string]any)
	prog["signer"] = map[string]any{"unsigned": true}
	err = e.c.Create(ctx, obj, client.FieldValidation("Strict"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "spec.chains[0].programs[0].signer.unsigned"`) {
		t.Errorf("a ChainSet with signer.unsigned: %v", err)
	}
}

// The source delivers exactly the ChainSets whose nodeSelector picks its
// node, follows label changes and new generations, and resolves
// primaryNodeInterface from the Node's InternalIP.
func (e *env) testDesired(t *testing.T) {
	ctx := context.Background()
	node := e.node(t, "desired-node", map[string]string{"role": "edge"}, "127.0.0.1")
	e.node(t, "desired-other", map[string]string{"role": "core"}, "")
	primary := xdpChain("eth0")
	primary.InterfaceSelector.PrimaryNodeInterface = true
	edge := e.create(t, chainSet("desired-edge", map[string]string{"role": "edge"}, primary))
	e.create(t, chainSet("desired-core", map[string]string{"role": "core"}, xdpChain("eth1")))
	all := v1alpha1.ChainSpec{
		Hook: "tc-ingress", InterfaceSelector: v1alpha1.InterfaceSelector{Names: []string{"/^veth/"}, Exclude: []string{"veth9"}},
		Backend: "tcx", Programs: []v1alpha1.Program{program("count", 1)},
	}
	e.create(t, chainSet("desired-all", nil, all))

	wait := run(t, e.source(t, node.Name))
	want := []string{"ChainSet/desired-all@1:tc-ingress[/^veth/]", "ChainSet/desired-edge@1:xdp[eth0]+primary"}
	d := wait("the edge and all ChainSets", func(d agent.Desired) bool { return slices.Equal(owners(d), want) })
	c := d.Chains[1]
	// The agent resolves primaryNodeInterface where it acts, from the
	// Node's InternalIP addresses the source delivers.
	if !slices.Equal(d.NodeIPs, []netip.Addr{netip.MustParseAddr("127.0.0.1")}) {
		t.Errorf("NodeIPs %v, want the Node's InternalIP 127.0.0.1", d.NodeIPs)
	}
	wantProgs := []chain.LockedProgram{
		{Name: "ratelimit", Ref: "registry.example/net/ratelimit", Resolved: "registry.example/net/ratelimit:stable", Digest: digestA, Object: objectA,
			Signer: &chain.Signer{Key: "SHA256:abc"}, Function: "xdp_ratelimit", Priority: 10, ProceedOn: []string{"pass"}},
		{Name: "count", Ref: "registry.example/net/count", Resolved: "registry.example/net/count:stable", Digest: digestA, Object: objectA,
			Signer: &chain.Signer{Key: "SHA256:abc"}, Function: "xdp_count", Priority: 20, ProceedOn: []string{"pass"}},
	}
	if c.Hook != bpf.HookXDP || len(c.Programs) != 2 || c.Programs[0].Name != wantProgs[0].Name || !c.Programs[0].Signer.Equal(wantProgs[0].Signer) ||
		c.Programs[1].Digest != digestA || c.Programs[1].Object != objectA || c.Programs[1].Priority != 20 {
		t.Errorf("edge chain programs: %+v", c.Programs)
	}
	if a := d.Chains[0]; a.Backend != "tcx" || !slices.Equal(a.Interfaces.Exclude, []string{"veth9"}) {
		t.Errorf("all chain: %+v", a)
	}

	// The node's labels change: the edge chain goes, the core one comes.
	node.Labels = map[string]string{"role": "core"}
	if err := e.c.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	wait("the core ChainSet after relabelling", func(d agent.Desired) bool {
		return slices.Equal(owners(d), []string{"ChainSet/desired-all@1:tc-ingress[/^veth/]", "ChainSet/desired-core@1:xdp[eth1]"})
	})
	node.Labels = map[string]string{"role": "edge"}
	if err := e.c.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	wait("the edge ChainSet back", func(d agent.Desired) bool { return slices.Equal(owners(d), want) })

	// A new generation, and a new InternalIP.
	if err := e.c.Get(ctx, client.ObjectKeyFromObject(edge), edge); err != nil {
		t.Fatal(err)
	}
	edge.Spec.Chains[0].Programs = edge.Spec.Chains[0].Programs[:1]
	if err := e.c.Update(ctx, edge); err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.77"}}
	if err := e.c.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	d = wait("generation 2 with the new InternalIP", func(d agent.Desired) bool {
		return slices.Equal(owners(d), []string{"ChainSet/desired-all@1:tc-ingress[/^veth/]", "ChainSet/desired-edge@2:xdp[eth0]+primary"}) &&
			slices.Equal(d.NodeIPs, []netip.Addr{netip.MustParseAddr("192.0.2.77")})
	})
	if n := len(d.Chains[1].Programs); n != 1 {
		t.Errorf("generation 2 has %d programs, want 1", n)
	}

	// Deleting the ChainSet takes its chain away.
	if err := e.c.Delete(ctx, edge); err != nil {
		t.Fatal(err)
	}
	wait("no edge ChainSet", func(d agent.Desired) bool {
		return slices.Equal(owners(d), []string{"ChainSet/desired-all@1:tc-ingress[/^veth/]"})
	})
}

func applied(owner string, gen int64, iface string, ids ...uint32) agent.ChainResult {
	r := agent.ChainResult{Owner: owner, Generation: gen, Interface: iface, Hook: bpf.HookXDP, Backend: "dispatcher", Applied: true}
	for i, id := range ids {
		r.Programs = append(r.Programs, agent.ProgramResult{Name: fmt.Sprintf("p%d", i), Digest: digestA, ID: id})
	}
	return r
}

func failed(owner string, gen int64, iface, reason, msg string) agent.ChainResult {
	return agent.ChainResult{Owner: owner, Generation: gen, Interface: iface, Hook: bpf.HookXDP, Reason: reason, Message: msg}
}

func (e *env) statusOf(t *testing.T, cs, node string) *v1alpha1.ChainSetNodeStatus {
	t.Helper()
	var list v1alpha1.ChainSetNodeStatusList
	if err := e.c.List(context.Background(), &list, client.MatchingLabels{kubernetes.LabelChainSet: cs, kubernetes.LabelNode: node}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d status objects for ChainSet %s on node %s, want 1", len(list.Items), cs, node)
	}
	return &list.Items[0]
}

func (e *env) counts(t *testing.T, name string) v1alpha1.ChainSetStatus {
	t.Helper()
	cs := &v1alpha1.ChainSet{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Name: name}, cs); err != nil {
		t.Fatal(err)
	}
	return cs.Status
}

func condition(st *v1alpha1.ChainSetNodeStatus, typ string) string {
	c := meta.FindStatusCondition(st.Status.Conditions, typ)
	if c == nil {
		return "missing"
	}
	return string(c.Status) + "/" + c.Reason
}

// Results become one status object per ChainSet and node, owned by the
// ChainSet, and the ChainSet counts its nodes.
func (e *env) testStatus(t *testing.T) {
	ctx := context.Background()
	for _, n := range []string{"status-a", "status-b", "status-c"} {
		e.node(t, n, map[string]string{"pool": "status"}, "")
	}
	cs := e.create(t, chainSet("status-web", map[string]string{"pool": "status"}, xdpChain("eth0", "eth1")))
	a, b := e.source(t, "status-a"), e.source(t, "status-b")
	const owner = "ChainSet/status-web"

	// Before any result for it: Progressing.
	if err := a.Report(ctx, agent.Result{}); err != nil {
		t.Fatal(err)
	}
	st := e.statusOf(t, "status-web", "status-a")
	if got := condition(st, "Progressing") + " " + condition(st, "Applied"); got != "True/Progressing False/Progressing" {
		t.Errorf("before results: %s", got)
	}
	if got, want := e.counts(t, "status-web"), (v1alpha1.ChainSetStatus{SelectedNodes: 3}); got != want {
		t.Errorf("counts before results: %+v, want %+v", got, want)
	}

	if err := a.Report(ctx, agent.Result{Chains: []agent.ChainResult{
		applied(owner, 1, "eth1", 31, 32), applied(owner, 1, "eth0", 21, 22),
		applied("ChainSet/someone-else", 4, "eth9", 99),
	}}); err != nil {
		t.Fatal(err)
	}
	st = e.statusOf(t, "status-web", "status-a")
	if st.Spec.ChainSet != "status-web" || st.Spec.NodeName != "status-a" || st.Status.ObservedGeneration != 1 {
		t.Errorf("status object %s: spec %+v, observedGeneration %d", st.Name, st.Spec, st.Status.ObservedGeneration)
	}
	if refs := st.OwnerReferences; len(refs) != 1 || refs[0].UID != cs.UID || refs[0].Kind != "ChainSet" || refs[0].APIVersion != "kfm.dev/v1alpha1" {
		t.Errorf("ownerReferences: %+v, want the ChainSet %s", refs, cs.UID)
	}
	if got := condition(st, "Applied") + " " + condition(st, "Progressing") + " " + condition(st, "Degraded"); got != "True/Applied False/Applied False/AsExpected" {
		t.Errorf("conditions after applying: %s", got)
	}
	if len(st.Status.Chains) != 2 || st.Status.Chains[0].Interface != "eth0" || st.Status.Chains[0].Backend != "dispatcher" ||
		st.Status.Chains[0].Programs[0].ID != 21 || st.Status.Chains[0].Programs[1].ID != 22 || st.Status.Chains[1].Programs[1].ID != 32 {
		t.Errorf("chains (per interface, programs in run order): %+v", st.Status.Chains)
	}

	// The other node fails verification: it reports Degraded; counts say so.
	if err := b.Report(ctx, agent.Result{Chains: []agent.ChainResult{
		failed(owner, 1, "eth0", agent.ReasonVerificationFailed, "ratelimit: signer key SHA256:abc is not accepted by policy.yaml"),
		applied(owner, 1, "eth1", 41, 42),
	}}); err != nil {
		t.Fatal(err)
	}
	st = e.statusOf(t, "status-web", "status-b")
	if got := condition(st, "Degraded") + " " + condition(st, "Applied"); got != "True/VerificationFailed False/VerificationFailed" {
		t.Errorf("conditions after a refused signer: %s", got)
	}
	if c := meta.FindStatusCondition(st.Status.Conditions, "Degraded"); c == nil || !strings.Contains(c.Message, "eth0/xdp: ratelimit: signer key SHA256:abc is not accepted") {
		t.Errorf("Degraded message: %+v", c)
	}
	if got, want := e.counts(t, "status-web"), (v1alpha1.ChainSetStatus{SelectedNodes: 3, AppliedNodes: 1, FailedNodes: 1}); got != want {
		t.Errorf("counts: %+v, want %+v", got, want)
	}

	// A steady node writes nothing.
	rv := e.statusOf(t, "status-web", "status-a").ResourceVersion
	for range 3 {
		if err := a.Report(ctx, agent.Result{Chains: []agent.ChainResult{applied(owner, 1, "eth0", 21, 22), applied(owner, 1, "eth1", 31, 32)}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.statusOf(t, "status-web", "status-a").ResourceVersion; got != rv {
		t.Errorf("an unchanged report rewrote the status object (resourceVersion %s -> %s)", rv, got)
	}

	// A new generation: Progressing until the node reports on it; the
	// applied count drops to the nodes at the new generation.
	if err := e.c.Get(ctx, client.ObjectKeyFromObject(cs), cs); err != nil {
		t.Fatal(err)
	}
	cs.Spec.Chains[0].Programs = cs.Spec.Chains[0].Programs[:1]
	if err := e.c.Update(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if err := a.Report(ctx, agent.Result{Chains: []agent.ChainResult{applied(owner, 1, "eth0", 21, 22), applied(owner, 1, "eth1", 31, 32)}}); err != nil {
		t.Fatal(err)
	}
	st = e.statusOf(t, "status-web", "status-a")
	if got := condition(st, "Progressing") + " " + condition(st, "Applied"); got != "True/Progressing False/Progressing" || st.Status.ObservedGeneration != 1 {
		t.Errorf("after generation 2, node still at 1: %s, observedGeneration %d", got, st.Status.ObservedGeneration)
	}
	if c := meta.FindStatusCondition(st.Status.Conditions, "Progressing"); c == nil || c.ObservedGeneration != 2 {
		t.Errorf("Progressing condition: %+v, want observedGeneration 2", c)
	}

	// Many agents report at once; the counts converge on what they wrote.
	c := e.source(t, "status-c")
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, s := range []*kubernetes.Source{a, b, c} {
		wg.Go(func() {
			errs <- s.Report(ctx, agent.Result{Chains: []agent.ChainResult{applied(owner, 2, "eth0", 51), applied(owner, 2, "eth1", 52)}})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got, want := e.counts(t, "status-web"), (v1alpha1.ChainSetStatus{SelectedNodes: 3, AppliedNodes: 3}); got != want {
		t.Errorf("counts after three concurrent reports: %+v, want %+v", got, want)
	}
}

// Two ChainSets that claim one hook on a node both reach the agent, and both
// report the agent's Conflict without rewriting each other.
func (e *env) testConflict(t *testing.T) {
	ctx := context.Background()
	e.node(t, "conflict-node", map[string]string{"pool": "conflict"}, "")
	e.create(t, chainSet("conflict-b", map[string]string{"pool": "conflict"}, xdpChain("eth0")))
	e.create(t, chainSet("conflict-a", nil, xdpChain("/^eth/")))
	s := e.source(t, "conflict-node")
	wait := run(t, s)
	d := wait("both ChainSets", func(d agent.Desired) bool {
		return slices.Equal(owners(d), []string{"ChainSet/conflict-a@1:xdp[/^eth/]", "ChainSet/conflict-b@1:xdp[eth0]"})
	})
	_ = d
	res := agent.Result{Chains: []agent.ChainResult{
		failed("ChainSet/conflict-a", 1, "eth0", agent.ReasonConflict, "xdp on eth0 is also claimed by ChainSet/conflict-b"),
		failed("ChainSet/conflict-b", 1, "eth0", agent.ReasonConflict, "xdp on eth0 is also claimed by ChainSet/conflict-a"),
	}}
	if err := s.Report(ctx, res); err != nil {
		t.Fatal(err)
	}
	rvs := map[string]string{}
	for _, name := range []string{"conflict-a", "conflict-b"} {
		st := e.statusOf(t, name, "conflict-node")
		if got := condition(st, "Degraded"); got != "True/Conflict" {
			t.Errorf("%s: Degraded %s, want True/Conflict", name, got)
		}
		rvs[name] = st.ResourceVersion
		if got := e.counts(t, name); got.FailedNodes != 1 || got.AppliedNodes != 0 {
			t.Errorf("%s counts: %+v", name, got)
		}
	}
	for range 3 {
		if err := s.Report(ctx, res); err != nil {
			t.Fatal(err)
		}
	}
	for name, rv := range rvs {
		if got := e.statusOf(t, name, "conflict-node").ResourceVersion; got != rv {
			t.Errorf("%s: the status flapped (resourceVersion %s -> %s)", name, rv, got)
		}
	}
}

// A node that leaves a ChainSet's selector, and a deleted ChainSet, leave no
// status object of the node behind.
func (e *env) testCleanup(t *testing.T) {
	ctx := context.Background()
	node := e.node(t, "cleanup-node", map[string]string{"pool": "cleanup"}, "")
	e.node(t, "cleanup-other", map[string]string{"pool": "cleanup"}, "")
	cs1 := e.create(t, chainSet("cleanup-one", map[string]string{"pool": "cleanup"}, xdpChain("eth0")))
	cs2 := e.create(t, chainSet("cleanup-two", map[string]string{"pool": "cleanup"}, xdpChain("eth1")))
	s := e.source(t, node.Name)
	res := agent.Result{Chains: []agent.ChainResult{applied("ChainSet/cleanup-one", 1, "eth0", 1), applied("ChainSet/cleanup-two", 1, "eth1", 2)}}
	if err := s.Report(ctx, res); err != nil {
		t.Fatal(err)
	}
	e.statusOf(t, "cleanup-one", "cleanup-node")
	e.statusOf(t, "cleanup-two", "cleanup-node")
	if got := e.counts(t, "cleanup-one"); got.SelectedNodes != 2 || got.AppliedNodes != 1 {
		t.Errorf("cleanup-one counts: %+v", got)
	}

	// The node leaves the selector: the agent removed the chains and
	// reports; its objects go and the counts follow.
	node.Labels = nil
	if err := e.c.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	if err := s.Report(ctx, agent.Result{}); err != nil {
		t.Fatal(err)
	}
	var list v1alpha1.ChainSetNodeStatusList
	if err := e.c.List(ctx, &list, client.MatchingLabels{kubernetes.LabelNode: "cleanup-node"}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("%d status objects left on a node that left the selector", len(list.Items))
	}
	if got, want := e.counts(t, "cleanup-one"), (v1alpha1.ChainSetStatus{SelectedNodes: 1}); got != want {
		t.Errorf("cleanup-one counts after the node left: %+v, want %+v", got, want)
	}

	// Back in, then the ChainSet is deleted. Kubernetes' garbage collector
	// would delete the owned object (envtest runs none); the agent does too.
	node.Labels = map[string]string{"pool": "cleanup"}
	if err := e.c.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	if err := s.Report(ctx, res); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Delete(ctx, cs1); err != nil {
		t.Fatal(err)
	}
	if err := s.Report(ctx, agent.Result{Chains: res.Chains[1:]}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.List(ctx, &list, client.MatchingLabels{kubernetes.LabelNode: "cleanup-node"}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Spec.ChainSet != cs2.Name {
		t.Errorf("after deleting %s: status objects %+v, want only %s's", cs1.Name, list.Items, cs2.Name)
	}
}
