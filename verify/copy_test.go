package verify

import (
	"context"
	"errors"
	"testing"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"

	"github.com/kfm-project/kfm/internal/sigstoretest"
	"github.com/kfm-project/kfm/internal/testregistry"
)

// Signatures copied next to a cached bundle verify with the registry gone,
// in both formats and for keyless signatures too, from an OCI layout store
// like kfm's cache (tags there are full references).
func TestVerifyFromCacheOffline(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	key := newTestKey(t)
	vs := sigstoretest.New(t)
	repo, ref := testRepo(t, reg, "net/cached")

	keyBoth := pushArtifact(t, repo, "key", nil)
	mustSign(t, repo, ref, keyBoth, key.priv, FormatBundle)
	mustSign(t, repo, ref, keyBoth, key.priv, FormatLegacy)
	keyless := pushArtifact(t, repo, "keyless", nil)
	if _, err := AttachBundle(ctx, repo, keyless, keylessBundle(t, vs, keyless, keylessOpts{})); err != nil {
		t.Fatal(err)
	}
	unsigned := pushArtifact(t, repo, "unsigned", nil)

	store, err := oci.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"key", "keyless", "unsigned"} {
		desc, err := oras.Copy(ctx, repo, tag, store, ref+":"+tag, oras.CopyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := CopySignatures(ctx, repo, store, ref+":"+tag, desc, CopyOptions{DstFullReferenceTags: true})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]int{"key": 2, "keyless": 1, "unsigned": 0}[tag]; n != want {
			t.Fatalf("%s: copied %d signature manifests, want %d", tag, n, want)
		}
	}
	reg.Stop()

	opts := &VerifyOptions{FullReferenceTags: true}
	res, err := Verify(ctx, store, ref+":key", keyBoth, keyPolicy(key.pub), opts)
	if err != nil {
		t.Fatalf("key-signed, offline: %v", err)
	}
	if len(res.Signatures) != 2 || !res.Signatures[0].Verified || !res.Signatures[1].Verified {
		t.Fatalf("want the bundle and the legacy signature, both verified: %+v", res.Signatures)
	}
	if _, err := Verify(ctx, store, ref+":keyless", keyless, keylessPolicy(t, vs.WriteTrustedRoot(t, vs), releaseID), opts); err != nil {
		t.Fatalf("keyless, offline: %v", err)
	}
	if _, err := Verify(ctx, store, ref+":unsigned", unsigned, keyPolicy(key.pub), opts); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned, offline: %v", err)
	}
	// And the registry really is gone.
	if _, err := Verify(ctx, repo, ref+":key", keyBoth, keyPolicy(key.pub), nil); err == nil {
		t.Fatal("the registry still answers")
	}
}

// Signing into an OCI layout exercises the referrers path of a store that
// indexes subjects itself (no tag fallback).
func TestSignIntoLayout(t *testing.T) {
	ctx := context.Background()
	key := newTestKey(t)
	store, err := oci.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ref := "registry.example.com/net/layout"
	d := pushArtifact(t, store, ref+":1", nil)
	for _, f := range []Format{FormatBundle, FormatLegacy} {
		if _, err := Sign(ctx, store, ref+":1", d, key.priv, SignOptions{Format: f, FullReferenceTags: true}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Verify(ctx, store, ref+":1", d, keyPolicy(key.pub), &VerifyOptions{FullReferenceTags: true})
	if err != nil || len(res.Signatures) != 2 {
		t.Fatalf("verify: %v, signatures %+v", err, res.Signatures)
	}
	// Signing the same digest again adds a second legacy layer, as cosign
	// does; the same signature is not stored twice.
	other := newTestKey(t)
	if _, err := Sign(ctx, store, ref+":1", d, other.priv, SignOptions{Format: FormatLegacy, FullReferenceTags: true}); err != nil {
		t.Fatal(err)
	}
	res, err = Verify(ctx, store, ref+":1", d, keyPolicy(other.pub), &VerifyOptions{FullReferenceTags: true})
	if err != nil || len(res.Signatures) != 3 || res.Signer.Key != other.pub.Fingerprint {
		t.Fatalf("after a second legacy signature: %v %+v", err, res)
	}
	if res.Accepts(Signer{Key: key.pub.Fingerprint}) || !res.Accepts(Signer{Key: other.pub.Fingerprint}) {
		t.Fatal("Accepts disagrees with the policy of one key")
	}
	// Both keys trusted: both are accepted signers, whichever comes first.
	res, err = Verify(ctx, store, ref+":1", d, keyPolicy(key.pub, other.pub), &VerifyOptions{FullReferenceTags: true})
	if err != nil || !res.Accepts(Signer{Key: key.pub.Fingerprint}) || !res.Accepts(Signer{Key: other.pub.Fingerprint}) {
		t.Fatalf("two trusted keys: %v %+v", err, res.Signatures)
	}
}
