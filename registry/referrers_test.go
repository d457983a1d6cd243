package registry_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
)

// Signatures are stored next to the bundle in the cache so that they verify
// offline: a referrer (as cosign's bundle format writes) and a legacy
// sha256-<hex>.sig tag. The payloads here are stand-ins; the signature
// engineer's tests use real ones.
func TestFetchReferrersCachesSignatures(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{Auth: testregistry.AuthBasic})
	b, pinned := publish(t, r, "kfm/signed", "1.0.0", registry.PackOptions{})
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: b.Digest, Size: b.Size}

	empty := pushBlob(t, r, "kfm/signed", ocispec.MediaTypeEmptyJSON, []byte("{}"))
	sigLayer := pushBlob(t, r, "kfm/signed", "application/vnd.dev.sigstore.bundle.v0.3+json", []byte(`{"stand-in":"sigstore bundle"}`))
	ref, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.dev.sigstore.bundle.v0.3+json", Config: empty, Layers: []ocispec.Descriptor{sigLayer}, Subject: &subject})
	refDesc := pushManifest(t, r, "kfm/signed", "referrer-holder", ocispec.MediaTypeImageManifest, ref)

	legacyLayer := pushBlob(t, r, "kfm/signed", "application/vnd.dev.cosign.simplesigning.v1+json", []byte(`{"critical":{}}`))
	legacy, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: pushBlob(t, r, "kfm/signed", "application/vnd.oci.image.config.v1+json", []byte(`{}`)), Layers: []ocispec.Descriptor{legacyLayer}})
	sigTag := "sha256-" + b.Digest.Encoded() + ".sig"
	legacyDesc := pushManifest(t, r, "kfm/signed", sigTag, ocispec.MediaTypeImageManifest, legacy)

	c := newClient(t, r)
	if _, err := c.Pull(ctx, pinned, registry.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	copied, err := c.FetchReferrers(ctx, pinned)
	if err != nil {
		t.Fatal(err)
	}
	if len(copied) != 2 {
		t.Fatalf("copied %v", copied)
	}
	r.Stop()

	refs, err := c.Cache().Referrers(ctx, subject, "")
	if err != nil || len(refs) != 1 || refs[0].Digest != refDesc.Digest {
		t.Fatalf("cached referrers %v, %v; want %s", refs, err, refDesc.Digest)
	}
	got, err := c.Cache().Resolve(ctx, pinned.Repo()+":"+sigTag)
	if err != nil || got.Digest != legacyDesc.Digest {
		t.Fatalf("cached legacy signature %v, %v", got, err)
	}
	data, err := c.Cache().FetchAll(ctx, sigLayer, 1<<20)
	if err != nil || !strings.Contains(string(data), "stand-in") {
		t.Fatalf("signature payload %q, %v", data, err)
	}
}
