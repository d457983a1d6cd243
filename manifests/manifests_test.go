package manifests_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/manifests"
)

func compile(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	b, err := fs.ReadFile(manifests.FS, "schema/"+name)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(name, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

// yamlToJSONValue converts YAML to the generic value the validator wants.
func yamlToJSONValue(t *testing.T, y []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The example manifest is valid for both the schema and kfm itself, and
// the schema rejects what kfm rejects.
func TestManifestSchema(t *testing.T) {
	s := compile(t, "kfm.schema.json")
	example, err := fs.ReadFile(manifests.FS, "examples/kfm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(yamlToJSONValue(t, example)); err != nil {
		t.Errorf("examples/kfm.yaml fails the schema: %v", err)
	}
	if _, err := chain.ParseManifest("examples/kfm.yaml", bytes.NewReader(example)); err != nil {
		t.Errorf("examples/kfm.yaml fails kfm's parser: %v", err)
	}
	for _, bad := range []string{
		"version: 1\nchains:\n  - {interface: eth0, hook: xdp, prio: 3}\n",
		"version: 1\nchains:\n  - {interface: eth0, hook: ingress}\n",
		"version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    programs:\n      - {name: a, path: a.o, ref: r/a:1}\n",
		"version: 2\n",
		"version: 1\nchains:\n  - {interface: eth0, netns: a/b, hook: xdp}\n",
	} {
		if err := s.Validate(yamlToJSONValue(t, []byte(bad))); err == nil {
			t.Errorf("schema accepts %q", bad)
		}
		if _, err := chain.ParseManifest("bad", strings.NewReader(bad)); !errors.Is(err, chain.ErrManifest) {
			t.Errorf("kfm accepts %q: %v", bad, err)
		}
	}
}

func TestLockSchema(t *testing.T) {
	s := compile(t, "kfm.lock.schema.json")
	off := false
	l := &chain.Lock{Chains: []chain.LockedChain{{Interface: "eth0", Netns: "blue", Hook: "xdp", Programs: []chain.LockedProgram{
		{Name: "a", Path: "a.o", Object: "sha256:ab", Function: "f", Priority: 10, ProceedOn: []string{"pass"}, Signer: &chain.Signer{Unsigned: true}},
		{Name: "b", Ref: "r/b:1", Resolved: "r/b:1", Digest: "sha256:cd", Object: "sha256:ef", Function: "g", Priority: 20, ProceedOn: []string{"pass"}, Signer: &chain.Signer{Key: "sha256:00"}, Counters: &off},
	}}}}
	out, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(yamlToJSONValue(t, out)); err != nil {
		t.Errorf("a lock kfm writes fails the schema: %v\n%s", err, out)
	}
}

// The DaemonSet and the systemd unit at least parse, and run the locked
// apply.
func TestDeploymentFiles(t *testing.T) {
	ds, err := fs.ReadFile(manifests.FS, "kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(ds))
	kinds := []string{}
	for {
		var doc struct{ Kind string }
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, doc.Kind)
	}
	if strings.Join(kinds, ",") != "Namespace,DaemonSet" {
		t.Errorf("daemonset.yaml: kinds %v", kinds)
	}
	// The agent, by digest, probed, with capabilities instead of
	// privileged.
	for _, want := range []string{`args: ["agent", "--source", "kubernetes"`, "image: ghcr.io/kfm-project/kfm@sha256:", "path: /healthz", "path: /readyz", "privileged: false", "drop: [ALL]", "mountPath: /run/netns"} {
		if !bytes.Contains(ds, []byte(want)) {
			t.Errorf("daemonset.yaml lacks %q", want)
		}
	}
	k, err := fs.ReadFile(manifests.FS, "kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Resources []string
		Images    []struct{ Name, NewName, Digest string }
	}
	if err := yaml.Unmarshal(k, &kust); err != nil {
		t.Fatal(err)
	}
	for _, r := range kust.Resources {
		if _, err := fs.Stat(manifests.FS, "kubernetes/"+r); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	if len(kust.Images) != 1 || kust.Images[0].Name != "ghcr.io/kfm-project/kfm" || !strings.HasPrefix(kust.Images[0].Digest, "sha256:") {
		t.Errorf("kustomization.yaml images: %+v", kust.Images)
	}
	unit, err := fs.ReadFile(manifests.FS, "systemd/kfm-apply.service")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("ExecStart=/usr/local/bin/kfm apply --locked")) {
		t.Errorf("kfm-apply.service does not apply the lock")
	}
}
