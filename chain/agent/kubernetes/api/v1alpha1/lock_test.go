package v1alpha1_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
)

const (
	digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	object = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func locked(name string, prio int) chain.LockedProgram {
	return chain.LockedProgram{
		Name: name, Ref: "registry.example/net/" + name + ":stable", Resolved: "registry.example/net/" + name + ":stable",
		Digest: digest, Object: object, Signer: &chain.Signer{Subject: "ci@example.com", Issuer: "https://issuer.example"},
		Function: "xdp_" + name, Priority: prio, ProceedOn: []string{"pass"}, Params: map[string]string{"burst": "500"},
	}
}

func TestFromLock(t *testing.T) {
	web := []chain.LockedProgram{locked("ratelimit", 10), locked("count", 20)}
	for _, tc := range []struct {
		name    string
		lock    chain.Lock
		names   map[string][]string // hook -> interfaces
		wantErr string
	}{
		{"one chain", chain.Lock{Chains: []chain.LockedChain{{Interface: "eth0", Hook: bpf.HookXDP, Programs: web}}},
			map[string][]string{"xdp": {"eth0"}}, ""},
		{"same chain on two interfaces", chain.Lock{Chains: []chain.LockedChain{
			{Interface: "eth0", Hook: bpf.HookXDP, Programs: web},
			{Interface: "eth1", Hook: bpf.HookXDP, Programs: []chain.LockedProgram{web[1], web[0]}},
			{Interface: "eth0", Hook: bpf.HookTCIngress, Backend: "tcx", Programs: web[1:]},
		}}, map[string][]string{"xdp": {"eth0", "eth1"}, "tc-ingress": {"eth0"}}, ""},
		{"different chains on one hook", chain.Lock{Chains: []chain.LockedChain{
			{Interface: "eth0", Hook: bpf.HookXDP, Programs: web},
			{Interface: "eth1", Hook: bpf.HookXDP, Programs: web[:1]},
		}}, nil, "eth0 and eth1 run different xdp chains"},
		{"local object", chain.Lock{Chains: []chain.LockedChain{{Interface: "eth0", Hook: bpf.HookXDP, Programs: []chain.LockedProgram{
			{Name: "dev", Path: "dev.o", Object: object, Function: "f"},
		}}}}, nil, `program "dev" is a local object (dev.o)`},
		{"unsigned", chain.Lock{Chains: []chain.LockedChain{{Interface: "eth0", Hook: bpf.HookXDP, Programs: []chain.LockedProgram{
			func() chain.LockedProgram { p := locked("x", 1); p.Signer = &chain.Signer{Unsigned: true}; return p }(),
		}}}}, nil, `program "x" was locked without an accepted signature`},
		{"empty", chain.Lock{}, nil, "kfm.lock has no chains"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := v1alpha1.FromLock("web", &tc.lock, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(tc.wantErr, "program") && !errors.Is(err, v1alpha1.ErrNotPinned) {
					t.Errorf("err %v is not ErrNotPinned", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, c := range cs.Spec.Chains {
				got[c.Hook] = c.InterfaceSelector.Names
				for _, p := range c.Programs {
					lp := p.Locked()
					want := locked(p.Name, lp.Priority)
					if !reflect.DeepEqual(lp, want) {
						t.Errorf("%s: round trip through the ChainSet:\n got %+v\nwant %+v", p.Name, lp, want)
					}
				}
			}
			if !reflect.DeepEqual(got, tc.names) {
				t.Errorf("chains %v, want %v", got, tc.names)
			}
		})
	}
}

func ExampleFromLock() {
	lock := &chain.Lock{Version: chain.LockVersion, Chains: []chain.LockedChain{{
		Interface: "eth0", Hook: bpf.HookXDP,
		Programs: []chain.LockedProgram{{
			Name: "ratelimit", Ref: "registry.example/net/ratelimit:1.2", Resolved: "registry.example/net/ratelimit:1.2",
			Digest: digest, Object: object, Signer: &chain.Signer{Key: "SHA256:q1w2e3"},
			Function: "xdp_ratelimit", Priority: 10, ProceedOn: []string{"pass"},
		}},
	}}}
	cs, err := v1alpha1.FromLock("edge", lock, &metav1.LabelSelector{MatchLabels: map[string]string{"role": "edge"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, _ := yaml.Marshal(cs)
	fmt.Print(string(out))
	// Output:
	// apiVersion: kfm.dev/v1alpha1
	// kind: ChainSet
	// metadata:
	//   name: edge
	// spec:
	//   chains:
	//   - hook: xdp
	//     interfaceSelector:
	//       names:
	//       - eth0
	//     programs:
	//     - digest: sha256:1111111111111111111111111111111111111111111111111111111111111111
	//       function: xdp_ratelimit
	//       name: ratelimit
	//       object: sha256:2222222222222222222222222222222222222222222222222222222222222222
	//       priority: 10
	//       proceedOn:
	//       - pass
	//       ref: registry.example/net/ratelimit:1.2
	//       resolved: registry.example/net/ratelimit:1.2
	//       signer:
	//         key: SHA256:q1w2e3
	//   nodeSelector:
	//     matchLabels:
	//       role: edge
}
