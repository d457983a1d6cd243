package manifests_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kfm-project/kfm/manifests"
)

// The agent's ClusterRole reads ChainSets and Nodes and writes only status:
// no ChainSet spec, no Node, nothing else.
func TestAgentRBAC(t *testing.T) {
	data, err := fs.ReadFile(manifests.FS, "kubernetes/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type rule struct {
		APIGroups []string `yaml:"apiGroups"`
		Resources []string `yaml:"resources"`
		Verbs     []string `yaml:"verbs"`
	}
	var kinds []string
	var rules []rule
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc struct {
			Kind  string
			Rules []rule
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, doc.Kind)
		rules = append(rules, doc.Rules...)
	}
	if got := strings.Join(kinds, ","); got != "ServiceAccount,ClusterRole,ClusterRoleBinding" {
		t.Errorf("rbac.yaml kinds: %s", got)
	}
	writes := []string{"create", "update", "patch", "delete", "deletecollection", "*"}
	for _, r := range rules {
		for _, res := range r.Resources {
			writable := slices.ContainsFunc(r.Verbs, func(v string) bool { return slices.Contains(writes, v) })
			if writable && res != "chainsetnodestatuses" && res != "chainsets/status" {
				t.Errorf("the agent may %v %s", r.Verbs, res)
			}
		}
	}
	policy, err := fs.ReadFile(manifests.FS, "kubernetes/admission-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(policy, []byte("authentication.kubernetes.io/node-name")) || !bytes.Contains(policy, []byte("system:serviceaccount:kfm-system:kfm-agent")) {
		t.Error("admission-policy.yaml does not tie the agent's service account to its node")
	}
	for _, crd := range []string{"kfm.dev_chainsets.yaml", "kfm.dev_chainsetnodestatuses.yaml"} {
		if _, err := fs.ReadFile(manifests.FS, "kubernetes/crds/"+crd); err != nil {
			t.Error(err)
		}
	}
}
