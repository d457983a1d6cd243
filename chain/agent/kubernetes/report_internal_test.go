package kubernetes

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
)

func TestStatusName(t *testing.T) {
	long := strings.Repeat("n", 250)
	names := map[string]bool{}
	for _, tc := range [][2]string{{"web", "node-1"}, {"a.b", "c"}, {"a", "b.c"}, {long, long}, {"web", long[:200] + ".x"}} {
		n := statusName(tc[0], tc[1])
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Errorf("statusName(%.20q, %.20q) = %q: %v", tc[0], tc[1], n, errs)
		}
		if names[n] {
			t.Errorf("statusName(%.20q, %.20q) = %q twice", tc[0], tc[1], n)
		}
		names[n] = true
	}
	if n := statusName("web", "node-1"); !strings.HasPrefix(n, "web.node-1-") {
		t.Errorf("statusName(web, node-1) = %q, want web.node-1-HASH", n)
	}
	for _, v := range []string{"node-1", long, long[:70] + "-.x"} {
		if errs := validation.IsValidLabelValue(labelValue(v)); len(errs) > 0 {
			t.Errorf("labelValue(%.20q) = %q: %v", v, labelValue(v), errs)
		}
	}
}

// The conditions a user reads from a node's results.
func TestNodeStatus(t *testing.T) {
	cs := &v1alpha1.ChainSet{ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: 3}}
	ok := func(gen int64, iface string) agent.ChainResult {
		return agent.ChainResult{Owner: "ChainSet/web", Generation: gen, Interface: iface, Hook: bpf.HookXDP, Applied: true,
			Programs: []agent.ProgramResult{{Name: "a", ID: 7}, {Name: "b", ID: 8}}}
	}
	bad := func(iface, reason string) agent.ChainResult {
		return agent.ChainResult{Owner: "ChainSet/web", Generation: 3, Interface: iface, Hook: bpf.HookXDP, Reason: reason, Message: "why"}
	}
	for _, tc := range []struct {
		name     string
		results  []agent.ChainResult
		want     string // Applied Progressing Degraded
		observed int64
	}{
		{"nothing yet", nil, "False/Progressing True/Progressing False/Progressing", 0},
		{"applied", []agent.ChainResult{ok(3, "eth1"), ok(3, "eth0")}, "True/Applied False/Applied False/AsExpected", 3},
		{"older generation", []agent.ChainResult{ok(2, "eth0"), ok(3, "eth1")}, "False/Progressing True/Progressing False/Progressing", 2},
		{"refused signer", []agent.ChainResult{ok(3, "eth0"), bad("eth1", agent.ReasonVerificationFailed)},
			"False/VerificationFailed False/VerificationFailed True/VerificationFailed", 3},
		{"no interface", []agent.ChainResult{bad("", agent.ReasonInterfaceMissing)},
			"False/InterfaceMissing False/InterfaceMissing True/InterfaceMissing", 3},
		{"conflict", []agent.ChainResult{bad("eth0", agent.ReasonConflict)}, "False/Conflict False/Conflict True/Conflict", 3},
		{"no reason given", []agent.ChainResult{bad("eth0", "")}, "False/LoadFailed False/LoadFailed True/LoadFailed", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st v1alpha1.NodeStatus
			nodeStatus(&st, cs, tc.results)
			var got []string
			for _, typ := range []string{"Applied", "Progressing", "Degraded"} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil {
					t.Fatalf("no %s condition", typ)
				}
				if c.ObservedGeneration != 3 {
					t.Errorf("%s: observedGeneration %d, want the ChainSet's 3", typ, c.ObservedGeneration)
				}
				got = append(got, string(c.Status)+"/"+c.Reason)
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("conditions %s, want %s", g, tc.want)
			}
			if st.ObservedGeneration != tc.observed {
				t.Errorf("observedGeneration %d, want %d", st.ObservedGeneration, tc.observed)
			}
			if len(st.Chains) != len(tc.results) {
				t.Fatalf("%d chains, want %d", len(st.Chains), len(tc.results))
			}
			if len(st.Chains) == 2 && (st.Chains[0].Interface != "eth0" || st.Chains[1].Interface != "eth1") {
				t.Errorf("chains not ordered by interface: %+v", st.Chains)
			}
			if tc.name == "applied" && (st.Chains[0].Programs[0].ID != 7 || st.Chains[0].Programs[1].Name != "b") {
				t.Errorf("programs not in run order with IDs: %+v", st.Chains[0].Programs)
			}

			// The same results again move no transition time.
			before := meta.FindStatusCondition(st.Conditions, "Applied").LastTransitionTime
			nodeStatus(&st, cs, tc.results)
			if after := meta.FindStatusCondition(st.Conditions, "Applied").LastTransitionTime; !after.Equal(&before) {
				t.Errorf("lastTransitionTime moved without a change: %v -> %v", before, after)
			}
		})
	}
}
