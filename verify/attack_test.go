package verify

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/kfm-project/kfm/internal/testregistry"
)

// bundleOf reads back the sigstore bundle kfm attached to desc.
func bundleOf(t testing.TB, repo *remote.Repository, desc ocispec.Descriptor) *protobundle.Bundle {
	t.Helper()
	ctx := context.Background()
	refs, err := registry.Referrers(ctx, repo, desc, "")
	if err != nil || len(refs) != 1 {
		t.Fatalf("referrers of %s: %v %v", desc.Digest, refs, err)
	}
	data, err := content.FetchAll(ctx, repo, refs[0])
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	raw, err := content.FetchAll(ctx, repo, m.Layers[0])
	if err != nil {
		t.Fatal(err)
	}
	var b protobundle.Bundle
	if err := protojson.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

// Every attack of the issue, against a real registry. Nothing may be
// accepted, and the error must say why.
func TestAttacksAreRefused(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	trusted := newTestKey(t)
	stranger := newTestKey(t)

	type setup struct {
		repo   *remote.Repository
		ref    string // what the user asked for
		desc   ocispec.Descriptor
		policy *Policy
	}
	tests := []struct {
		name    string
		arrange func(t *testing.T, repo *remote.Repository, ref string) setup
		want    error
		reason  string
	}{
		{
			name: "unsigned bundle",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				d := pushArtifact(t, repo, "1.0.0", nil)
				return setup{repo, ref + ":1.0.0", d, keyPolicy(trusted.pub)}
			},
			want: ErrUnsigned, reason: "has no signature",
		},
		{
			name: "bundle signed by a key not in the policy",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				d := pushArtifact(t, repo, "1.0.0", nil)
				mustSign(t, repo, ref, d, stranger.priv, FormatBundle)
				return setup{repo, ref + ":1.0.0", d, keyPolicy(trusted.pub)}
			},
			want: ErrUntrusted, reason: "no key of the rule verifies it",
		},
		{
			name: "legacy signature by a key not in the policy",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				d := pushArtifact(t, repo, "1.0.0", nil)
				mustSign(t, repo, ref, d, stranger.priv, FormatLegacy)
				return setup{repo, ref + ":1.0.0", d, keyPolicy(trusted.pub)}
			},
			want: ErrUntrusted, reason: "no key of the rule verifies it",
		},
		{
			name: "bundle referrer of another digest copied onto this one",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				signed := pushArtifact(t, repo, "good", nil)
				mustSign(t, repo, ref, signed, trusted.priv, FormatBundle)
				evil := pushArtifact(t, repo, "1.0.0", []byte("evil program"))
				if _, err := AttachBundle(ctx, repo, evil, bundleOf(t, repo, signed)); err != nil {
					t.Fatal(err)
				}
				return setup{repo, ref + ":1.0.0", evil, keyPolicy(trusted.pub)}
			},
			want: ErrInvalidSignature, reason: "not this manifest (a signature copied from other content)",
		},
		{
			name: "legacy signature tag of another digest copied onto this one",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				signed := pushArtifact(t, repo, "good", nil)
				mustSign(t, repo, ref, signed, trusted.priv, FormatLegacy)
				evil := pushArtifact(t, repo, "1.0.0", []byte("evil program"))
				sig, err := repo.Resolve(ctx, LegacyTag(signed.Digest))
				if err != nil {
					t.Fatal(err)
				}
				if err := repo.Tag(ctx, sig, LegacyTag(evil.Digest)); err != nil {
					t.Fatal(err)
				}
				return setup{repo, ref + ":1.0.0", evil, keyPolicy(trusted.pub)}
			},
			want: ErrInvalidSignature, reason: "not this manifest (a signature copied from other content)",
		},
		{
			name: "tag moved to other content after signing",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				signed := pushArtifact(t, repo, "1.0.0", nil)
				mustSign(t, repo, ref, signed, trusted.priv, FormatBundle)
				mustSign(t, repo, ref, signed, trusted.priv, FormatLegacy)
				pushArtifact(t, repo, "1.0.0", []byte("evil program")) // the tag moves
				now, err := repo.Resolve(ctx, "1.0.0")
				if err != nil {
					t.Fatal(err)
				}
				return setup{repo, ref + ":1.0.0", now, keyPolicy(trusted.pub)}
			},
			want: ErrUnsigned, reason: "has no signature",
		},
		{
			name: "signed bundle whose statement was edited",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				// Signed in one repository; the same bytes pushed to
				// another, with an edited copy of the signature.
				obj := []byte("program of the edited statement")
				origin, originRef := testRepo(t, reg, "net/origin")
				d := pushArtifact(t, origin, "1.0.0", obj)
				mustSign(t, origin, originRef, d, trusted.priv, FormatBundle)
				b := bundleOf(t, origin, d)
				env := b.GetDsseEnvelope()
				env.Payload = []byte(strings.Replace(string(env.Payload), `"predicate":{}`, `"predicate":{"approved":"yes"}`, 1))
				if d2 := pushArtifact(t, repo, "1.0.0", obj); d2.Digest != d.Digest {
					t.Fatal("same bytes, different digest")
				}
				if _, err := AttachBundle(ctx, repo, d, b); err != nil {
					t.Fatal(err)
				}
				return setup{repo, ref + ":1.0.0", d, keyPolicy(trusted.pub)}
			},
			want: ErrInvalidSignature, reason: "does not verify with the key it names",
		},
		{
			name: "layer tampered in the registry",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				d := pushArtifact(t, repo, "1.0.0", nil)
				mustSign(t, repo, ref, d, trusted.priv, FormatBundle)
				tamper(t, reg, layersOf(t, repo, d)[1].Digest)
				return setup{repo, ref + ":1.0.0", d, keyPolicy(trusted.pub)}
			},
			want: ErrContent, reason: "the store serves other bytes than were signed",
		},
		{
			name: "config tampered in the registry",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				d := pushArtifact(t, repo, "1.0.0", nil)
				mustSign(t, repo, ref, d, trusted.priv, FormatLegacy)
				tamper(t, reg, layersOf(t, repo, d)[0].Digest)
				return setup{repo, ref + ":1.0.0", d, keyPolicy(trusted.pub)}
			},
			want: ErrContent, reason: "the store serves other bytes than were signed",
		},
		{
			name: "policy matching no rule",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				d := pushArtifact(t, repo, "1.0.0", nil)
				mustSign(t, repo, ref, d, trusted.priv, FormatBundle)
				p := &Policy{Source: "policy.yaml", Rules: []Rule{{Match: "registry.example.com/net/*", Keys: []*PublicKey{trusted.pub}}}}
				return setup{repo, ref + ":1.0.0", d, p}
			},
			want: ErrUntrusted, reason: "no rule of policy.yaml matches",
		},
		{
			name: "deny rule before an accepting rule",
			arrange: func(t *testing.T, repo *remote.Repository, ref string) setup {
				d := pushArtifact(t, repo, "1.0.0", nil)
				mustSign(t, repo, ref, d, trusted.priv, FormatBundle)
				p := &Policy{Source: "policy.yaml", Rules: []Rule{{Match: "**/attack-*", Deny: true}, {Match: "**", Keys: []*PublicKey{trusted.pub}}}}
				return setup{repo, ref + ":1.0.0", d, p}
			},
			want: ErrUntrusted, reason: "refused by deny rule",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo, ref := testRepo(t, reg, "net/attack-"+string(rune('a'+i)))
			s := tt.arrange(t, repo, ref)
			res, err := Verify(ctx, s.repo, s.ref, s.desc, s.policy, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("error %q does not say %q", err, tt.reason)
			}
			if res.Signer != nil {
				t.Fatalf("refused, yet the result names signer %v", res.Signer)
			}
			for _, sig := range res.Signatures {
				if sig.Verified {
					t.Fatalf("refused, yet a signature is marked verified: %+v", sig)
				}
			}
			t.Logf("refused: %v", err)
		})
	}
}

// What was verified stays what gets installed: a moved tag does not change
// the verdict on the digest verified before.
func TestVerifyPinsTheDigest(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	key := newTestKey(t)
	repo, ref := testRepo(t, reg, "net/pinned")
	signed := pushArtifact(t, repo, "1.0.0", nil)
	mustSign(t, repo, ref, signed, key.priv, FormatBundle)
	pushArtifact(t, repo, "1.0.0", []byte("evil program"))
	res, err := Verify(ctx, repo, ref+"@"+signed.Digest.String(), signed, keyPolicy(key.pub), nil)
	if err != nil || res.Digest != signed.Digest {
		t.Fatalf("the signed digest no longer verifies after the tag moved: %v", err)
	}
	// A reference naming one digest cannot be used to verify another.
	evil, _ := repo.Resolve(ctx, "1.0.0")
	if _, err := Verify(ctx, repo, ref+"@"+signed.Digest.String(), evil, keyPolicy(key.pub), nil); err == nil {
		t.Fatal("verified a descriptor that is not the digest of the reference")
	}
}

func mustSign(t testing.TB, repo *remote.Repository, ref string, d ocispec.Descriptor, k *SigningKey, f Format) {
	t.Helper()
	if _, err := Sign(context.Background(), repo, ref+"@"+d.Digest.String(), d, k, SignOptions{Format: f}); err != nil {
		t.Fatal(err)
	}
}

// layersOf returns config and layers of the manifest d.
func layersOf(t testing.TB, repo *remote.Repository, d ocispec.Descriptor) []ocispec.Descriptor {
	t.Helper()
	data, err := content.FetchAll(context.Background(), repo, d)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return append([]ocispec.Descriptor{m.Config}, m.Layers...)
}
