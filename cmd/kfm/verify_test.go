package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/verify"
)

// pushTestBundle pushes a kfm-style bundle (random object) to ref (a tag
// reference) and returns the digest reference.
func pushTestBundle(t testing.TB, reg *testregistry.Registry, repoName, tag string) (string, ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	repo, err := remote.NewRepository(reg.Host() + "/" + repoName)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	obj := make([]byte, 2048)
	rand.Read(obj)
	cfg, err := oras.PushBytes(ctx, repo, "application/vnd.kfm.bundle.config.v1+json", append([]byte(`{"name":"t","n":"`), append([]byte(tag), '"', '}')...))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := oras.PushBytes(ctx, repo, "application/vnd.kfm.bpf.object.v1+elf", obj)
	if err != nil {
		t.Fatal(err)
	}
	m, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.kfm.bundle.v1", oras.PackManifestOptions{
		ConfigDescriptor: &cfg, Layers: []ocispec.Descriptor{layer},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, m, tag); err != nil {
		t.Fatal(err)
	}
	return reg.Host() + "/" + repoName + "@" + m.Digest.String(), m
}

// keyPair makes a key pair with kfm generate-key-pair.
func keyPair(t testing.TB, password string) (key, pub string) {
	t.Helper()
	t.Setenv("KFM_PASSWORD", password)
	prefix := filepath.Join(t.TempDir(), "cosign")
	if _, stderr, code := kfm(t, "", "generate-key-pair", "--output-key-prefix", prefix); code != 0 {
		t.Fatalf("generate-key-pair: %d %s", code, stderr)
	}
	return prefix + ".key", prefix + ".pub"
}

func TestSignVerifyCommands(t *testing.T) {
	cliEnv(t)
	reg := testregistry.Start(t, testregistry.Options{})
	key, pub := keyPair(t, "pw")
	_, otherPub := keyPair(t, "pw2")
	t.Setenv("KFM_PASSWORD", "pw")

	// Unsigned: exit 3, and the text names the problem.
	tagRef := reg.Host() + "/net/cli:1.0.0"
	pinned, _ := pushTestBundle(t, reg, "net/cli", "1.0.0")
	stdout, stderr, code := kfm(t, "", "verify", tagRef, "--key", pub)
	if code != exitVerifyFailed || !strings.Contains(stderr, "has no signature") || !strings.Contains(stdout, "signatures: none") {
		t.Fatalf("unsigned: exit %d\n%s\n%s", code, stdout, stderr)
	}

	// Sign both formats (by tag: the digest is what gets signed).
	for _, f := range []string{"bundle", "legacy"} {
		stdout, stderr, code = kfm(t, "", "sign", tagRef, "--key", key, "--signature-format", f, "-a", "team=net")
		if code != 0 || !strings.Contains(stdout, "Signed "+pinned) || !strings.Contains(stdout, "resolved to") {
			t.Fatalf("sign %s: exit %d\n%s\n%s", f, code, stdout, stderr)
		}
	}

	// Verified, in JSON, with both signatures and the accepted key.
	stdout, stderr, code = kfm(t, "", "verify", tagRef, "--key", pub, "-o", "json")
	if code != 0 {
		t.Fatalf("verify: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var res verify.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("verify -o json: %v\n%s", err, stdout)
	}
	pk, err := verify.LoadPublicKey(context.Background(), pub)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signer == nil || res.Signer.Key != pk.Fingerprint || len(res.Signatures) != 2 || res.Digest.String() != pinned[strings.Index(pinned, "@")+1:] {
		t.Fatalf("verify result: %+v", res)
	}

	// Text output says which key was accepted.
	stdout, _, code = kfm(t, "", "verify", pinned, "--key", pub)
	if code != 0 || !strings.Contains(stdout, "Verified: signed by key "+pk.Fingerprint) {
		t.Fatalf("verify text: %d\n%s", code, stdout)
	}

	// Another key: refused, exit 3.
	_, stderr, code = kfm(t, "", "verify", pinned, "--key", otherPub)
	if code != exitVerifyFailed || !strings.Contains(stderr, "no key of the rule verifies it") {
		t.Fatalf("other key: exit %d %s", code, stderr)
	}

	// A policy file: default location under --config-dir.
	confDir := t.TempDir()
	pubData, _ := os.ReadFile(pub)
	os.WriteFile(filepath.Join(confDir, "release.pub"), pubData, 0o644)
	os.WriteFile(filepath.Join(confDir, "policy.yaml"), []byte("version: 1\nrules:\n  - match: "+reg.Host()+"/net/*\n    keys: [release.pub]\n"), 0o644)
	if stdout, stderr, code = kfm(t, "", "--config-dir", confDir, "verify", tagRef); code != 0 || !strings.Contains(stdout, "policy.yaml:3 ("+reg.Host()+"/net/*)") {
		t.Fatalf("policy: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// No rule for the repository: exit 3.
	other, _ := pushTestBundle(t, reg, "lb/other", "1")
	if _, stderr, code = kfm(t, "", "--config-dir", confDir, "verify", other); code != exitVerifyFailed || !strings.Contains(stderr, "no rule of") {
		t.Fatalf("no rule: exit %d %s", code, stderr)
	}
	// A malformed policy: exit 3, the message names the line.
	bad := filepath.Join(confDir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nrules:\n  - match: '**'\n    keys: [release.pub]\n    trust: all\n"), 0o644)
	if _, stderr, code = kfm(t, "", "verify", tagRef, "--policy", bad); code != exitVerifyFailed || !strings.Contains(stderr, bad+":5:") {
		t.Fatalf("malformed policy: exit %d %s", code, stderr)
	}
	// Missing policy: a plain failure that says what to do.
	if _, stderr, code = kfm(t, "", "--config-dir", t.TempDir(), "verify", tagRef); code != exitFailure || !strings.Contains(stderr, "give --key, --trusted-root or --policy") {
		t.Fatalf("missing policy: exit %d %s", code, stderr)
	}

	// Usage errors: exit 2.
	for _, args := range [][]string{
		{"verify", tagRef, "--key", pub, "--policy", bad},
		{"verify", tagRef, "--certificate-identity", "a@b"},
		{"verify", tagRef, "--trusted-root", "x.json"},
		{"sign", tagRef},
		{"sign", tagRef, "--key", key, "--signature-format", "pgp"},
		{"sign", tagRef, "--key", key, "-a", "novalue"},
		{"verify", "not-a-reference", "--key", pub},
	} {
		if _, stderr, code := kfm(t, "", args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}

	// A wrong password is a plain failure that says so.
	t.Setenv("KFM_PASSWORD", "wrong")
	if _, stderr, code = kfm(t, "", "sign", tagRef, "--key", key); code != exitFailure || !strings.Contains(stderr, "wrong password") {
		t.Fatalf("wrong password: exit %d %s", code, stderr)
	}
}

// kfm verify --offline reads the bundle and its signatures from the cache
// (--cache-dir): after a pull that copied the signatures, it works with the
// registry gone.
func TestVerifyOffline(t *testing.T) {
	cliEnv(t)
	reg := testregistry.Start(t, testregistry.Options{})
	key, pub := keyPair(t, "pw")
	t.Setenv("KFM_PASSWORD", "pw")
	tagRef := reg.Ref("kfm/params", "1.0.0")
	if _, stderr, code := kfm(t, "", "publish", testObject, tagRef); code != 0 {
		t.Fatalf("publish: %s", stderr)
	}
	if _, stderr, code := kfm(t, "", "sign", tagRef, "--key", key); code != 0 {
		t.Fatalf("sign: %s", stderr)
	}
	// kfm pull verifies against the policy and copies the signatures into
	// the cache.
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte("version: 1\nrules:\n  - match: '"+reg.Host()+"/**'\n    keys: ["+pub+"]\n"), 0o644)
	stdout, stderr, code := kfm(t, "", "pull", tagRef, "--policy", policy)
	if code != 0 || !strings.Contains(stdout, "Signer: key sha256:") {
		t.Fatalf("pull: exit %d %s %s", code, stdout, stderr)
	}
	reg.Stop()

	stdout, stderr, code = kfm(t, "", "verify", tagRef, "--offline", "--key", pub)
	if code != 0 || !strings.Contains(stdout, "Verified: signed by key") {
		t.Fatalf("verify --offline: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if _, stderr, code := kfm(t, "", "verify", tagRef, "--key", pub); code != exitFailure {
		t.Fatalf("online verify with the registry gone: exit %d %s", code, stderr)
	}
	if _, stderr, code := kfm(t, "", "verify", reg.Ref("kfm/never-pulled", "1"), "--offline", "--key", pub); code != exitFailure || !strings.Contains(stderr, "pull it first") {
		t.Fatalf("verify --offline of something not cached: exit %d %s", code, stderr)
	}
}

// TestInspectShowsSignatures: kfm inspect REF lists the signatures of the
// digest and, with a policy, which one is accepted.
func TestInspectShowsSignatures(t *testing.T) {
	cliEnv(t)
	reg := testregistry.Start(t, testregistry.Options{})
	key, pub := keyPair(t, "pw")
	t.Setenv("KFM_PASSWORD", "pw")
	signed, unsigned := reg.Ref("net/signed", "1.0.0"), reg.Ref("net/unsigned", "1.0.0")
	if _, stderr, code := kfm(t, "", "publish", testObject, signed, "--sign", "--key", key); code != 0 {
		t.Fatalf("publish --sign: %s", stderr)
	}
	if _, stderr, code := kfm(t, "", "publish", testObject, unsigned); code != 0 {
		t.Fatalf("publish: %s", stderr)
	}

	// No policy: listed, not checked.
	out, stderr, code := kfm(t, "", "inspect", signed)
	if code != 0 || !strings.Contains(out, "no trust policy: listed, not checked") || !strings.Contains(out, "bundle") || !strings.Contains(out, "key") {
		t.Fatalf("inspect without a policy: exit %d\n%s\n%s", code, out, stderr)
	}
	out, _, _ = kfm(t, "", "inspect", unsigned)
	if !strings.Contains(out, "none: the bundle is unsigned") {
		t.Errorf("inspect of an unsigned bundle:\n%s", out)
	}

	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte("version: 1\nrules:\n  - match: '"+reg.Host()+"/net/*'\n    keys: ["+pub+"]\n"), 0o644)
	out, stderr, code = kfm(t, "", "inspect", signed, "--policy", policy, "-o", "json")
	if code != 0 {
		t.Fatalf("inspect -o json: exit %d %s", code, stderr)
	}
	var got struct {
		Digest     string `json:"digest"`
		Signatures struct {
			Policy     string `json:"policy"`
			Signer     *struct{ Key string }
			Signatures []struct {
				Format   string
				Verified bool
			}
			Refused string
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Signatures.Signer == nil || len(got.Signatures.Signatures) != 1 || !got.Signatures.Signatures[0].Verified || got.Signatures.Refused != "" {
		t.Errorf("signed bundle under a policy that trusts its key: %s", out)
	}
	out, _, _ = kfm(t, "", "inspect", unsigned, "--policy", policy)
	if !strings.Contains(out, "refused:") || !strings.Contains(out, "no signature") {
		t.Errorf("unsigned bundle under a policy:\n%s", out)
	}
}
