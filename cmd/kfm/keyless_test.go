package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/sign"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/kfm-project/kfm/internal/sigstoretest"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/verify"
)

// kfm verify --trusted-root --certificate-identity[-regexp]
// --certificate-oidc-issuer[-regexp]: keyless, offline, against a private
// sigstore's trusted_root.json.
func TestVerifyKeylessCommand(t *testing.T) {
	cliEnv(t)
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	vs := sigstoretest.New(t)
	trustedRoot := vs.WriteTrustedRoot(t, vs)
	pinned, desc := pushTestBundle(t, reg, "net/keyless-cli", "1.0.0")

	leaf, sv := vs.Leaf(t, "release@example.com", "https://issuer.example.com")
	sk, err := verify.NewSigningKey(sv)
	if err != nil {
		t.Fatal(err)
	}
	b, err := verify.NewBundle(ctx, desc, sk, verify.SignOptions{
		CertificateProvider: sigstoretest.CertificateProvider{Cert: leaf},
		TransparencyLogs:    []sign.Transparency{&sigstoretest.Rekor{S: vs, Leaf: leaf, Integrated: time.Now().Add(time.Minute)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	vs.AddTimestamp(t, b)
	repo, err := remote.NewRepository(reg.Host() + "/net/keyless-cli")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	if _, err := verify.AttachBundle(ctx, repo, desc, b); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		want int
		msg  string
	}{
		{"exact", []string{"--certificate-identity", "release@example.com", "--certificate-oidc-issuer", "https://issuer.example.com"}, 0, ""},
		{"regexp", []string{"--certificate-identity-regexp", `^[a-z]+@example\.com$`, "--certificate-oidc-issuer-regexp", `^https://issuer\.`}, 0, ""},
		{"other identity", []string{"--certificate-identity", "ops@example.com", "--certificate-oidc-issuer", "https://issuer.example.com"}, exitVerifyFailed, "not an identity the rule accepts"},
		{"other issuer", []string{"--certificate-identity", "release@example.com", "--certificate-oidc-issuer", "https://accounts.example.com"}, exitVerifyFailed, "not an identity the rule accepts"},
		{"both exact and regexp", []string{"--certificate-identity", "a", "--certificate-identity-regexp", "b", "--certificate-oidc-issuer", "c"}, exitUsage, "exactly one of subject and subjectRegexp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"verify", pinned, "--trusted-root", trustedRoot, "-o", "json"}, tt.args...)
			stdout, stderr, code := kfm(t, "", args...)
			if code != tt.want || !strings.Contains(stderr, tt.msg) {
				t.Fatalf("exit %d, want %d (%q)\n%s\n%s", code, tt.want, tt.msg, stdout, stderr)
			}
			if tt.want != 0 {
				return
			}
			var res verify.Result
			if err := json.Unmarshal([]byte(stdout), &res); err != nil {
				t.Fatal(err)
			}
			if res.Signer == nil || res.Signer.Subject != "release@example.com" || res.Signer.Issuer != "https://issuer.example.com" {
				t.Fatalf("signer %+v", res.Signer)
			}
		})
	}
	// A trusted root of another deployment does not know the CA.
	other := sigstoretest.New(t)
	_, stderr, code := kfm(t, "", "verify", pinned, "--trusted-root", other.WriteTrustedRoot(t, other),
		"--certificate-identity", "release@example.com", "--certificate-oidc-issuer", "https://issuer.example.com")
	if code != exitVerifyFailed {
		t.Fatalf("foreign trusted root: exit %d %s", code, stderr)
	}
}
