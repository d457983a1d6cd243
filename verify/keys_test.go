package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature/kms/fake" // registers fakekms:// (tests only)

	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testregistry"
)

// The password of a cosign key comes from KFM_PASSWORD, else
// COSIGN_PASSWORD, else a terminal; without any it is an error, never a
// silent empty password.
func TestKeyPassword(t *testing.T) {
	key := newTestKey(t)
	notATTY, err := os.Open(key.pubPath)
	if err != nil {
		t.Fatal(err)
	}
	defer notATTY.Close()
	tests := []struct {
		name        string
		kfm, cosign *string
		want        error
		wantMsg     string
	}{
		{name: "KFM_PASSWORD", kfm: ptr(key.password)},
		{name: "COSIGN_PASSWORD", cosign: ptr(key.password)},
		{name: "KFM_PASSWORD wins", kfm: ptr(key.password), cosign: ptr("wrong")},
		{name: "wrong password", kfm: ptr("wrong"), want: ErrKey, wantMsg: "wrong password"},
		{name: "empty is a password too", cosign: ptr(""), want: ErrKey, wantMsg: "wrong password"},
		{name: "no password, no terminal", want: ErrNoPassword, wantMsg: "set KFM_PASSWORD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setenv(t, EnvPassword, tt.kfm)
			setenv(t, EnvCosignPassword, tt.cosign)
			s, err := LoadSigningKey(context.Background(), key.keyPath, PasswordFunc(notATTY, os.Stderr))
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if s.Fingerprint() != key.pub.Fingerprint {
					t.Fatalf("loaded key %s, want %s", s.Fingerprint(), key.pub.Fingerprint)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("got %v, want %v saying %q", err, tt.want, tt.wantMsg)
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// An unencrypted PKCS#8 key needs no password.
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, err := cryptoutils.MarshalPrivateKeyToPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	plain := writeFile(t, filepath.Join(dir, "plain.key"), string(pemKey))
	s, err := LoadSigningKey(ctx, plain, nil)
	if err != nil {
		t.Fatalf("plain key: %v", err)
	}
	if fp, _ := Fingerprint(&priv.PublicKey); s.Fingerprint() != fp {
		t.Fatal("wrong key")
	}
	// An encrypted one without a password function is refused clearly.
	key := newTestKey(t)
	if _, err := LoadSigningKey(ctx, key.keyPath, nil); !errors.Is(err, ErrNoPassword) {
		t.Fatalf("encrypted key without password: %v", err)
	}
	for _, tt := range []struct{ name, data, want string }{
		{"public key as private", "", "unknown private key PEM file type"},
		{"garbage", "hello", "PEM decoding failed"},
	} {
		p := key.pubPath
		if tt.data != "" {
			p = writeFile(t, filepath.Join(dir, "bad.key"), tt.data)
		}
		if _, err := LoadSigningKey(ctx, p, StaticPassword("x")); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	if _, err := LoadPublicKey(ctx, key.keyPath); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "not a PEM public key") {
		t.Errorf("private key as public: %v", err)
	}
	if _, err := LoadPublicKey(ctx, "/dev/null"); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("device as key: %v", err)
	}
	// generate-key-pair never overwrites.
	if _, err := WriteKeyPair(strings.TrimSuffix(key.keyPath, ".key"), StaticPassword("x")); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("overwrite: %v", err)
	}
	st, err := os.Stat(key.keyPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", st.Mode())
	}
	data, _ := os.ReadFile(key.keyPath)
	if !strings.HasPrefix(string(data), "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----") {
		t.Errorf("private key is not cosign's encrypted format:\n%s", data)
	}
}

// Keys made by cosign generate-key-pair sign with kfm, and the reverse is
// covered by the cosign interop tests of cmd/kfm.
func TestCosignGeneratedKey(t *testing.T) {
	cosign := testenv.RequireTool(t, "cosign")
	dir := t.TempDir()
	cmd := exec.Command(cosign, "generate-key-pair", "--output-key-prefix", filepath.Join(dir, "made-by-cosign"))
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=s3cret")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	ctx := context.Background()
	s, err := LoadSigningKey(ctx, filepath.Join(dir, "made-by-cosign.key"), StaticPassword("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(ctx, filepath.Join(dir, "made-by-cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	reg := testregistry.Start(t, testregistry.Options{})
	repo, ref := testRepo(t, reg, "net/cosign-key")
	d := pushArtifact(t, repo, "1", nil)
	mustSign(t, repo, ref, d, s, FormatBundle)
	if res, err := Verify(ctx, repo, ref+":1", d, keyPolicy(pub), nil); err != nil || res.Signer.Key != pub.Fingerprint {
		t.Fatalf("verify: %v", err)
	}
}

// KMS URIs go through sigstore's KMS registry; the test registers
// sigstore's fake provider (fakekms://), the only one that needs no network.
func TestKMSKey(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.WithValue(context.Background(), fake.KmsCtxKey{}, priv)
	s, err := LoadSigningKey(ctx, "fakekms://release", nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(ctx, "fakekms://release")
	if err != nil {
		t.Fatal(err)
	}
	if fp, _ := Fingerprint(&priv.PublicKey); pub.Fingerprint != fp || s.Fingerprint() != fp {
		t.Fatalf("KMS key fingerprints %s / %s, want %s", s.Fingerprint(), pub.Fingerprint, fp)
	}
	reg := testregistry.Start(t, testregistry.Options{})
	repo, ref := testRepo(t, reg, "net/kms")
	for _, f := range []Format{FormatBundle, FormatLegacy} {
		d := pushArtifact(t, repo, string(f), nil)
		mustSign(t, repo, ref, d, s, f)
		if _, err := Verify(ctx, repo, ref+":"+string(f), d, keyPolicy(pub), nil); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	// A scheme nobody handles (no provider, no sigstore-kms-nosuch plugin
	// on PATH) is a clear error.
	if _, err := LoadPublicKey(ctx, "nosuch://key"); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "no kms provider found") {
		t.Fatalf("unknown KMS scheme: %v", err)
	}
}

func ptr(s string) *string { return &s }

// setenv sets or (v nil) unsets name for the test.
func setenv(t *testing.T, name string, v *string) {
	t.Helper()
	old, had := os.LookupEnv(name)
	if v == nil {
		os.Unsetenv(name)
	} else {
		os.Setenv(name, *v)
	}
	t.Cleanup(func() {
		if had {
			os.Setenv(name, old)
		} else {
			os.Unsetenv(name)
		}
	})
}
