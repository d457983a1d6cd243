package kubernetes

import (
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
)

// objects is a client.Reader over fixed objects: the informer cache the
// source reads in production, without an API server per fuzz execution
// (source_test.go runs the real one).
type objects struct {
	node *corev1.Node
	sets []v1alpha1.ChainSet
}

func (o objects) Get(_ context.Context, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	o.node.DeepCopyInto(obj.(*corev1.Node))
	return nil
}

func (o objects) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	list.(*v1alpha1.ChainSetList).Items = o.sets
	return nil
}

// FuzzChainSet: ChainSets are written by cluster users; the API server's
// schema is the only filter before the agent (and a CRD of another version
// may hold anything). Any ChainSet (JSON, as the API server serves it) and
// node labels become a desired state without a panic: a ChainSet whose node
// selector does not parse selects nothing, every chain is owned by its
// ChainSet with its programs, and every interface selector is evaluated
// (picking or failing) as the agent does. DeepCopy (generated) copies it
// exactly.
func FuzzChainSet(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"kfm.dev/v1alpha1","kind":"ChainSet","metadata":{"name":"web","generation":3},`+
		`"spec":{"nodeSelector":{"matchLabels":{"role":"web"},"matchExpressions":[{"key":"zone","operator":"In","values":["a","b"]}]},`+
		`"chains":[{"hook":"xdp","interfaceSelector":{"names":["eth0","/veth.*/"],"exclude":["veth9"],"primaryNodeInterface":true},`+
		`"programs":[{"name":"count","ref":"r.example/net/count:1","digest":"sha256:11","object":"sha256:22","signer":{"key":"sha256:33"},`+
		`"function":"xdp_count","priority":10,"proceedOn":["pass"],"params":{"a":"1"}}]}]}}`), "role=web\nzone=a")
	f.Add([]byte(`{"metadata":{"name":"x"},"spec":{"nodeSelector":{"matchExpressions":[{"key":"!","operator":"Exists","values":["v"]}]},"chains":[{"interfaceSelector":{"names":["/(/",""]}}]}}`), "")
	f.Add([]byte(`{"metadata":{"name":"x","deletionTimestamp":"2026-01-01T00:00:00Z"},"spec":{"chains":[{"programs":[{"signer":null}]}]}}`), "a=b")
	links := []agent.Link{{Name: "lo"}, {Name: "eth0", Primary: true}, {Name: "veth12"}}
	s := &Source{node: "node-1"}
	f.Fuzz(func(t *testing.T, data []byte, nodeLabels string) {
		var cs v1alpha1.ChainSet
		if err := json.Unmarshal(data, &cs); err != nil {
			return
		}
		if cp := cs.DeepCopy(); !reflect.DeepEqual(cp, &cs) {
			t.Fatalf("DeepCopy differs:\n%#v\n%#v", cp, &cs)
		}
		node := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}}}}
		node.Name, node.Labels = "node-1", map[string]string{}
		for _, kv := range strings.Split(nodeLabels, "\n") {
			k, v, _ := strings.Cut(kv, "=")
			node.Labels[k] = v
		}
		d, err := s.desired(context.Background(), objects{node: node, sets: []v1alpha1.ChainSet{cs}})
		if err != nil {
			t.Fatalf("desired: %v", err)
		}
		if len(d.Chains) > 0 && !slices.Equal(d.NodeIPs, []netip.Addr{netip.MustParseAddr("10.0.0.1")}) {
			t.Fatalf("node IPs %v, want the Node's InternalIP 10.0.0.1", d.NodeIPs)
		}
		if len(d.Chains) > 0 && len(d.Chains) != len(cs.Spec.Chains) {
			t.Fatalf("%d chains of %d", len(d.Chains), len(cs.Spec.Chains))
		}
		for i, c := range d.Chains {
			if c.Owner != OwnerPrefix+cs.Name || c.Generation != cs.Generation {
				t.Fatalf("chain %d owned by %q generation %d", i, c.Owner, c.Generation)
			}
			if len(c.Programs) != len(cs.Spec.Chains[i].Programs) {
				t.Fatalf("chain %d has %d programs, the ChainSet %d", i, len(c.Programs), len(cs.Spec.Chains[i].Programs))
			}
			c.Interfaces.Select(links)
		}
	})
}
