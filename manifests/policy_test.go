package manifests_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/kfm-project/kfm/internal/sigstoretest"
	"github.com/kfm-project/kfm/manifests"
	"github.com/kfm-project/kfm/verify"
)

// The example policy is valid for both the schema and kfm's parser (with
// the key and trusted root it names in place), and the schema rejects what
// kfm rejects.
func TestPolicySchema(t *testing.T) {
	s := compile(t, "policy.schema.json")
	example, err := fs.ReadFile(manifests.FS, "examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(yamlToJSONValue(t, example)); err != nil {
		t.Errorf("examples/policy.yaml fails the schema: %v", err)
	}

	dir := t.TempDir()
	kp, err := verify.GenerateKeyPair(verify.StaticPassword(""))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "keys"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "keys", "net-team.pub"), kp.PublicPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	vs := sigstoretest.New(t)
	tr, err := os.ReadFile(vs.WriteTrustedRoot(t, vs))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "trusted_root.json"), tr, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := verify.ParsePolicy(context.Background(), "examples/policy.yaml", example, dir)
	if err != nil {
		t.Fatalf("examples/policy.yaml fails kfm's parser: %v", err)
	}
	if r, err := p.Match("registry.example.com/net/ratelimit:1.0.0"); err != nil || len(r.Keys) != 1 || r.Keys[0].Fingerprint != kp.Fingerprint || r.Keyless == nil {
		t.Errorf("net rule: %+v %v", r, err)
	}

	for _, good := range []string{
		"version: 1\nrules: [{match: '127.0.0.1:5000/kfm/*', deny: true}, {match: '**', keys: [keys/net-team.pub]}]\n",
		"version: 1\nrules: [{match: '*.example.com/net/rate?imit', keys: [keys/net-team.pub]}]\n",
	} {
		if err := s.Validate(yamlToJSONValue(t, []byte(good))); err != nil {
			t.Errorf("schema refuses %q: %v", good, err)
		}
		if _, err := verify.ParsePolicy(context.Background(), "good", []byte(good), dir); err != nil {
			t.Errorf("kfm refuses %q: %v", good, err)
		}
	}
	for _, bad := range []string{
		"version: 2\nrules: [{match: '**', deny: true}]\n",
		"version: 1\nrules: []\n",
		"version: 1\nrules: [{match: '**'}]\n",
		"version: 1\nrules: [{match: '**', deny: true, keys: [k.pub]}]\n",
		"version: 1\nrules: [{match: 'r.example.com/net/x:1.0', deny: true}]\n",
		"version: 1\nrules: [{match: 'r.example.com/net/x@sha256:00', deny: true}]\n",
		"version: 1\nrules: [{match: '**', deny: true, trust: all}]\n",
		"version: 1\nrules: [{match: '**', keyless: {trustedRoot: t.json, identities: [{issuer: i}]}}]\n",
		"version: 1\nrules: [{match: '**', keyless: {trustedRoot: t.json, identities: [{issuer: i, subject: s, subjectRegexp: s}]}}]\n",
		"version: 1\nrules: [{match: '**', keyless: {identities: [{issuer: i, subject: s}]}}]\n",
	} {
		if err := s.Validate(yamlToJSONValue(t, []byte(bad))); err == nil {
			t.Errorf("schema accepts %q", bad)
		}
		if _, err := verify.ParsePolicy(context.Background(), "bad", []byte(bad), dir); !errors.Is(err, verify.ErrPolicy) {
			t.Errorf("kfm accepts %q: %v", bad, err)
		}
	}
}
