package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasregistry "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/verify"
)

// cosignTool runs a cosign binary with the key password, offline (its TUF
// cache in a temporary directory).
type cosignTool struct {
	path, home string
}

func newCosign(t *testing.T, name string) *cosignTool {
	return &cosignTool{path: testenv.RequireTool(t, name), home: t.TempDir()}
}

func (c *cosignTool) run(t *testing.T, password string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(c.path, args...)
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD="+password, "HOME="+c.home, "TUF_ROOT="+filepath.Join(c.home, "tuf"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cosign sign --key, with each generation and format of cosign, then
// kfm verify --key: both must agree.
func TestCosignSignsKfmVerifies(t *testing.T) {
	cliEnv(t)
	reg := testregistry.Start(t, testregistry.Options{})
	key, pub := keyPair(t, "interop") // made by kfm, used by cosign
	cosign3, cosign2 := newCosign(t, "cosign"), newCosign(t, "cosign2")
	tests := []struct {
		name   string
		cosign *cosignTool
		args   []string
		format verify.Format
		// indexed is the artifactType the referrers index gives the
		// bundle: cosign 2.6 writes no artifactType, so the index
		// derives the config's (empty) media type, and kfm must not
		// filter on it.
		indexed string
	}{
		{"cosign 3 bundle", cosign3, []string{"--use-signing-config=false", "--tlog-upload=false"}, verify.FormatBundle, verify.MediaTypeBundle},
		{"cosign 3 legacy", cosign3, []string{"--use-signing-config=false", "--tlog-upload=false", "--new-bundle-format=false"}, verify.FormatLegacy, ""},
		{"cosign 2 legacy", cosign2, []string{"--tlog-upload=false"}, verify.FormatLegacy, ""},
		{"cosign 2 bundle", cosign2, []string{"--tlog-upload=false", "--new-bundle-format"}, verify.FormatBundle, ocispec.MediaTypeEmptyJSON},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := "interop/cosign-signs-" + string(rune('a'+i))
			pinned, desc := pushTestBundle(t, reg, repo, "1.0.0")
			args := append([]string{"sign", "-y", "--key", key}, tt.args...)
			if out, err := tt.cosign.run(t, "interop", append(args, pinned)...); err != nil {
				t.Fatalf("cosign sign: %v\n%s", err, out)
			}
			if tt.indexed != "" {
				r, err := remote.NewRepository(reg.Host() + "/" + repo)
				if err != nil {
					t.Fatal(err)
				}
				r.PlainHTTP = true
				refs, err := orasregistry.Referrers(context.Background(), r, desc, "")
				if err != nil || len(refs) != 1 || refs[0].ArtifactType != tt.indexed {
					t.Fatalf("referrers index %+v (%v): want one entry of artifactType %s", refs, err, tt.indexed)
				}
			}
			stdout, stderr, code := kfm(t, "", "verify", reg.Host()+"/"+repo+":1.0.0", "--key", pub, "-o", "json")
			if code != 0 {
				t.Fatalf("kfm verify: exit %d\n%s\n%s", code, stdout, stderr)
			}
			var res verify.Result
			if err := json.Unmarshal([]byte(stdout), &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Signatures) != 1 || res.Signatures[0].Format != tt.format || !res.Signatures[0].Verified {
				t.Fatalf("want one verified %s signature: %+v", tt.format, res.Signatures)
			}
			// And a key cosign did not sign with is refused.
			_, otherPub := keyPair(t, "other")
			if _, stderr, code := kfm(t, "", "verify", pinned, "--key", otherPub); code != exitVerifyFailed {
				t.Fatalf("other key: exit %d %s", code, stderr)
			}
		})
	}
}

// kfm sign --key, each format, then cosign verify --key with each
// generation of cosign.
func TestKfmSignsCosignVerifies(t *testing.T) {
	cliEnv(t)
	reg := testregistry.Start(t, testregistry.Options{})
	key, pub := keyPair(t, "interop")
	t.Setenv("KFM_PASSWORD", "interop")
	cosign3, cosign2 := newCosign(t, "cosign"), newCosign(t, "cosign2")
	// cosign 2 verifies bundles only with a trusted root; for key-signed
	// bundles one holding nothing but its media type does.
	emptyRoot := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(emptyRoot, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, format := range []string{"bundle", "legacy"} {
		t.Run(format, func(t *testing.T) {
			repo := "interop/kfm-signs-" + string(rune('a'+i))
			pinned, _ := pushTestBundle(t, reg, repo, "1.0.0")
			if stdout, stderr, code := kfm(t, "", "sign", pinned, "--key", key, "--signature-format", format, "-a", "team=net"); code != 0 {
				t.Fatalf("kfm sign: exit %d\n%s\n%s", code, stdout, stderr)
			}
			out, err := cosign3.run(t, "", "verify", "--key", pub, "--insecure-ignore-tlog=true", pinned)
			if err != nil || !strings.Contains(out, "The signatures were verified against the specified public key") || !strings.Contains(out, `"team":"net"`) {
				t.Fatalf("cosign 3 verify: %v\n%s", err, out)
			}
			args := []string{"verify", "--key", pub, "--insecure-ignore-tlog=true"}
			if format == "bundle" {
				args = append(args, "--trusted-root", emptyRoot)
			}
			out, err = cosign2.run(t, "", append(args, pinned)...)
			if err != nil || !strings.Contains(out, "The signatures were verified against the specified public key") {
				t.Fatalf("cosign 2 verify: %v\n%s", err, out)
			}
			// cosign refuses what kfm signed for another key too.
			_, otherPub := keyPair(t, "other")
			t.Setenv("KFM_PASSWORD", "interop")
			if out, err := cosign3.run(t, "", "verify", "--key", otherPub, "--insecure-ignore-tlog=true", pinned); err == nil {
				t.Fatalf("cosign accepted another key:\n%s", out)
			}
		})
	}
}

// Both tools add to one legacy .sig manifest: cosign appends to what kfm
// wrote and kfm to what cosign wrote, and every signature stays valid.
func TestLegacySignaturesAccumulate(t *testing.T) {
	cliEnv(t)
	reg := testregistry.Start(t, testregistry.Options{})
	kfmKey, kfmPub := keyPair(t, "one")
	cosignKey, cosignPub := keyPair(t, "two")
	cosign3 := newCosign(t, "cosign")
	pinned, _ := pushTestBundle(t, reg, "interop/accumulate", "1.0.0")

	t.Setenv("KFM_PASSWORD", "one")
	if _, stderr, code := kfm(t, "", "sign", pinned, "--key", kfmKey, "--signature-format", "legacy"); code != 0 {
		t.Fatal(stderr)
	}
	if out, err := cosign3.run(t, "two", "sign", "-y", "--key", cosignKey, "--use-signing-config=false", "--tlog-upload=false", "--new-bundle-format=false", pinned); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	for _, pub := range []string{kfmPub, cosignPub} {
		stdout, stderr, code := kfm(t, "", "verify", pinned, "--key", pub, "-o", "json")
		var res verify.Result
		if code != 0 || json.Unmarshal([]byte(stdout), &res) != nil || len(res.Signatures) != 2 {
			t.Fatalf("kfm verify --key %s: exit %d\n%s\n%s", pub, code, stdout, stderr)
		}
		if out, err := cosign3.run(t, "", "verify", "--key", pub, "--insecure-ignore-tlog=true", pinned); err != nil {
			t.Fatalf("cosign verify --key %s: %v\n%s", pub, err, out)
		}
	}
}
