package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kfm-project/kfm/chain/agent/kubernetes"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
	"github.com/kfm-project/kfm/internal/controlplane"
)

// kfm lock --chainset prints kfm.lock as a ChainSet that pins exactly what
// the lock pins, and that the API server accepts.
func TestLockChainSet(t *testing.T) {
	h := newHost(t)
	rl := h.publish(samplesDir+"xdp_ratelimit.o", "net/ratelimit", "stable", "", "--bundle", bundleFile(t, "xdp_ratelimit", 10))
	ct := h.publish(samplesDir+"xdp_count.o", "net/count", "stable", "", "--bundle", bundleFile(t, "xdp_count", 20))
	h.writeConfig("kfm.yaml", fmt.Sprintf(`version: 1
chains:
  - interface: %[1]s
    hook: xdp
    programs:
      - name: ratelimit
        ref: %[2]s/net/ratelimit:stable
        params: {burst: "500"}
      - name: count
        ref: %[2]s/net/count:stable
`, h.iface, h.reg.Host()))

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lock", "--chainset", "Not_A_Name"}, `--chainset "Not_A_Name" is not a Kubernetes object name`},
		{[]string{"lock", "--node-selector", "role=edge"}, "--node-selector needs --chainset NAME"},
		{[]string{"lock", "--chainset", "web", "--node-selector", "role in edge"}, `--node-selector "role in edge"`},
	} {
		_, stderr, code := h.kfm(tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("kfm %s: exit %d, %q; want exit %d and %q", strings.Join(tc.args, " "), code, stderr, exitUsage, tc.want)
		}
	}

	out := h.mustKFM("lock", "--chainset", "web", "--node-selector", "role=edge")
	var cs v1alpha1.ChainSet
	if err := yaml.UnmarshalStrict([]byte(out), &cs); err != nil {
		t.Fatalf("kfm lock --chainset printed no ChainSet: %v\n%s", err, out)
	}
	lock := h.lock()
	if cs.Name != "web" || cs.Kind != "ChainSet" || cs.APIVersion != "kfm.dev/v1alpha1" ||
		cs.Spec.NodeSelector == nil || cs.Spec.NodeSelector.MatchLabels["role"] != "edge" || len(cs.Spec.Chains) != 1 {
		t.Fatalf("ChainSet:\n%s", out)
	}
	c := cs.Spec.Chains[0]
	if c.Hook != "xdp" || len(c.InterfaceSelector.Names) != 1 || c.InterfaceSelector.Names[0] != h.iface || len(c.Programs) != 2 {
		t.Fatalf("chain: %+v", c)
	}
	digests := map[string]string{"ratelimit": rl, "count": ct}
	for _, p := range c.Programs {
		lp := lock.Chains[0].Programs[0]
		if lock.Chains[0].Programs[1].Name == p.Name {
			lp = lock.Chains[0].Programs[1]
		}
		if p.Digest != digests[p.Name] || p.Digest != lp.Digest || p.Object != lp.Object || p.Signer == nil ||
			p.Signer.Key != lp.Signer.Key || p.Signer.Key == "" || int(p.Priority) != lp.Priority {
			t.Errorf("%s: ChainSet pins %+v (signer %+v), kfm.lock %+v (signer %+v)", p.Name, p, p.Signer, lp, lp.Signer)
		}
	}
	if out := h.mustKFM("lock", "--chainset", "web", "-o", "json"); !strings.Contains(out, `"kind": "ChainSet"`) {
		t.Errorf("-o json: %s", out)
	}

	t.Run("the API server accepts it", func(t *testing.T) {
		cfg := controlplane.Start(t)
		scheme, err := kubernetes.NewScheme()
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Create(context.Background(), &cs, client.FieldValidation("Strict")); err != nil {
			t.Fatalf("create the ChainSet kfm lock wrote: %v", err)
		}
	})

	// A program from a local object cannot go into a ChainSet.
	local, err := filepath.Abs(samplesDir + "xdp_count.o")
	if err != nil {
		t.Fatal(err)
	}
	h.writeConfig("kfm.yaml", fmt.Sprintf(`version: 1
chains:
  - interface: %s
    hook: xdp
    programs:
      - name: local
        path: %s
`, h.iface, local))
	_, stderr, code := h.kfm("lock", "--chainset", "web")
	if code != exitFailure || !strings.Contains(stderr, `program "local" is a local object`) {
		t.Errorf("a local object: exit %d, %s", code, stderr)
	}
}
