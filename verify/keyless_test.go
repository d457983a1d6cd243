package verify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content"

	"github.com/kfm-project/kfm/internal/sigstoretest"
	"github.com/kfm-project/kfm/internal/testregistry"
)

// keylessPolicy accepts identity/issuer certified under the trusted root.
func keylessPolicy(t testing.TB, trustedRoot string, ids ...Identity) *Policy {
	t.Helper()
	tr, err := LoadTrustedRoot(trustedRoot)
	if err != nil {
		t.Fatal(err)
	}
	kl, err := NewKeyless(trustedRoot, tr, ids...)
	if err != nil {
		t.Fatal(err)
	}
	return &Policy{Source: "test policy", Rules: []Rule{{Match: "**", Keyless: kl}}}
}

var releaseID = Identity{Subject: "release@example.com", Issuer: "https://issuer.example.com"}

func TestKeyless(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	vs := sigstoretest.New(t)
	otherCA := sigstoretest.New(t)
	good := vs.WriteTrustedRoot(t, vs)
	// Same log and timestamp authority, another certificate authority.
	wrongCA := vs.WriteTrustedRoot(t, otherCA)

	tests := []struct {
		name   string
		opts   keylessOpts
		root   string
		ids    []Identity
		want   error  // nil: accepted
		reason string // in the error message
	}{
		{name: "valid", root: good, ids: []Identity{releaseID}},
		{name: "valid without timestamp authority (log time is the observer)", opts: keylessOpts{noTSA: true}, root: good, ids: []Identity{releaseID}},
		{name: "identity regexp", root: good, ids: []Identity{{SubjectRegexp: `^[a-z]+@example\.com$`, IssuerRegexp: `^https://issuer\.example\.com$`}}},
		{name: "one of several identities", root: good, ids: []Identity{{Subject: "ops@example.com", Issuer: releaseID.Issuer}, releaseID}},
		{name: "identity not matching", opts: keylessOpts{identity: "mallory@example.com"}, root: good, ids: []Identity{releaseID},
			want: ErrUntrusted, reason: "not an identity the rule accepts"},
		{name: "issuer not matching", opts: keylessOpts{issuer: "https://evil.example.com"}, root: good, ids: []Identity{releaseID},
			want: ErrUntrusted, reason: "not an identity the rule accepts"},
		{name: "regexp not matching", opts: keylessOpts{identity: "release@example.com.evil.org"}, root: good, ids: []Identity{{SubjectRegexp: `^[a-z]+@example\.com$`, Issuer: releaseID.Issuer}},
			want: ErrUntrusted, reason: "not an identity the rule accepts"},
		{name: "trusted root without the signing CA", root: wrongCA, ids: []Identity{releaseID},
			want: ErrUntrusted, reason: "not issued by a certificate authority of the trusted root"},
		{name: "transparency-log entry missing", opts: keylessOpts{noTlog: true}, root: good, ids: []Identity{releaseID},
			want: ErrInvalidSignature, reason: "transparency-log entry"},
		{name: "transparency-log entry for other content", opts: keylessOpts{otherTlog: true}, root: good, ids: []Identity{releaseID},
			want: ErrInvalidSignature, reason: "transparency-log entry"},
		{name: "expired certificate without a valid timestamp", opts: keylessOpts{noTSA: true, integrated: time.Now().Add(30 * time.Minute)}, root: good, ids: []Identity{releaseID},
			want: ErrInvalidSignature, reason: "expired"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo, ref := testRepo(t, reg, "net/keyless")
			desc := pushArtifact(t, repo, "", nil)
			b := keylessBundle(t, vs, desc, tt.opts)
			if _, err := AttachBundle(ctx, repo, desc, b); err != nil {
				t.Fatal(err)
			}
			res, err := Verify(ctx, repo, ref+"@"+desc.Digest.String(), desc, keylessPolicy(t, tt.root, tt.ids...), nil)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if res.Signer == nil || res.Signer.Subject != "release@example.com" || res.Signer.Issuer != "https://issuer.example.com" {
					t.Fatalf("signer %+v, want release@example.com from https://issuer.example.com", res.Signer)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("case %d: got %v, want %v mentioning %q", i, err, tt.want, tt.reason)
			}
			if res.Signer != nil || len(res.Signatures) != 1 || res.Signatures[0].Verified {
				t.Fatalf("refused, yet the result says %+v", res)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
}

// A certificate-signed bundle is not accepted by a rule of keys, and a
// key-signed one not by a keyless rule.
func TestKeylessAndKeyRulesDoNotMix(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	vs := sigstoretest.New(t)
	key := newTestKey(t)
	repo, ref := testRepo(t, reg, "net/mix")

	d1 := pushArtifact(t, repo, "keyless", nil)
	if _, err := AttachBundle(ctx, repo, d1, keylessBundle(t, vs, d1, keylessOpts{})); err != nil {
		t.Fatal(err)
	}
	_, err := Verify(ctx, repo, ref+":keyless", d1, keyPolicy(key.pub), nil)
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "accepts only keys") {
		t.Fatalf("keyless signature under a key rule: %v", err)
	}

	d2 := pushArtifact(t, repo, "key", nil)
	if _, err := Sign(ctx, repo, ref+":key", d2, key.priv, SignOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(ctx, repo, ref+":key", d2, keylessPolicy(t, vs.WriteTrustedRoot(t, vs), releaseID), nil)
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "accepts only keyless") {
		t.Fatalf("key signature under a keyless rule: %v", err)
	}
}

// Legacy keyless signatures (cosign 2's default: certificate and the log's
// signed entry timestamp in annotations) verify offline too.
func TestLegacyKeyless(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	vs := sigstoretest.New(t)
	good := vs.WriteTrustedRoot(t, vs)
	for _, tt := range []struct {
		name     string
		identity string
		want     error
	}{
		{"accepted", "release@example.com", nil},
		{"identity not matching", "mallory@example.com", ErrUntrusted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo, ref := testRepo(t, reg, "net/legacy-keyless")
			desc := pushArtifact(t, repo, "", nil)
			pl, err := LegacyPayload(ref, desc.Digest, nil)
			if err != nil {
				t.Fatal(err)
			}
			ann := vs.LegacyKeyless(t, pl, tt.identity, releaseID.Issuer)
			layer := content.NewDescriptorFromBytes(MediaTypeSimpleSigning, pl)
			layer.Annotations = ann
			if _, err := appendLegacy(ctx, repo, LegacyTag(desc.Digest), layer, pl); err != nil {
				t.Fatal(err)
			}
			res, err := Verify(ctx, repo, ref+"@"+desc.Digest.String(), desc, keylessPolicy(t, good, releaseID), nil)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (res.Signer != nil) {
				t.Fatalf("got %v (signer %v), want %v", err, res.Signer, tt.want)
			}
			if tt.want == nil && res.Signer.Subject != "release@example.com" {
				t.Fatalf("signer %v", res.Signer)
			}
		})
	}
}
