package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
)

// Signatures are stored next to the bundle in the cache so that they verify
// offline: a referrer (as cosign's bundle format writes) and a legacy
// sha256-<hex>.sig tag, copied by FetchReferrers after a pull, or by the
// pull itself with PullOptions.Signatures. The payloads here are
// stand-ins; the signature engineer's tests use real ones.
func TestFetchReferrersCachesSignatures(t *testing.T) {
	for _, tc := range []struct {
		name string
		get  func(ctx context.Context, c *registry.Client, pinned registry.Reference) error
	}{
		{"FetchReferrers after Pull", func(ctx context.Context, c *registry.Client, pinned registry.Reference) error {
			if _, err := c.Pull(ctx, pinned, registry.PullOptions{}); err != nil {
				return err
			}
			copied, err := c.FetchReferrers(ctx, pinned)
			if err == nil && len(copied) != 2 {
				t.Errorf("copied %v, want the referrer and the legacy signature", copied)
			}
			return err
		}},
		{"Pull with Signatures", func(ctx context.Context, c *registry.Client, pinned registry.Reference) error {
			_, err := c.Pull(ctx, pinned, registry.PullOptions{Signatures: true})
			return err
		}},
		{"Fetch with Signatures", func(ctx context.Context, c *registry.Client, pinned registry.Reference) error {
			p, desc, err := c.Resolve(ctx, pinned, registry.PullOptions{})
			if err != nil {
				return err
			}
			return c.Fetch(ctx, p, desc, registry.PullOptions{Signatures: true})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			r := testregistry.Start(t, testregistry.Options{Auth: testregistry.AuthBasic})
			b, pinned := publish(t, r, "kfm/signed", "1.0.0", registry.PackOptions{})
			subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: b.Digest, Size: b.Size}
			sigLayer, refDesc := pushReferrer(t, r, "kfm/signed", subject, []byte(`{"stand-in":"sigstore bundle"}`))

			legacyLayer := pushBlob(t, r, "kfm/signed", "application/vnd.dev.cosign.simplesigning.v1+json", []byte(`{"critical":{}}`))
			legacy, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
				Config: pushBlob(t, r, "kfm/signed", "application/vnd.oci.image.config.v1+json", []byte(`{}`)), Layers: []ocispec.Descriptor{legacyLayer}})
			sigTag := "sha256-" + b.Digest.Encoded() + ".sig"
			legacyDesc := pushManifest(t, r, "kfm/signed", sigTag, ocispec.MediaTypeImageManifest, legacy)

			c := newClient(t, r)
			if err := tc.get(ctx, c, pinned); err != nil {
				t.Fatal(err)
			}
			r.Stop()

			if _, err := c.Open(ctx, pinned); err != nil {
				t.Errorf("the bundle is not in the cache: %v", err)
			}
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
		})
	}
}

// A pull with PullOptions.Signatures whose signatures cannot be copied (here
// a referrer's blob is larger than the client accepts) still pulls the
// bundle: the verification that follows fetches them again and reports
// why they fail, as FetchReferrers does here.
func TestPullSignaturesFailing(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{Auth: testregistry.AuthBasic})
	b, pinned := publish(t, r, "kfm/signed", "1.0.0", registry.PackOptions{})
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: b.Digest, Size: b.Size}
	pushReferrer(t, r, "kfm/signed", subject, []byte(`{"stand-in":"`+strings.Repeat("x", 8<<10)+`"}`))

	c := newClient(t, r, func(o *registry.Options) { o.Limits.MaxConfigSize = 4 << 10 })
	got, err := c.Pull(ctx, pinned, registry.PullOptions{Signatures: true})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if got.Digest != b.Digest {
		t.Errorf("pulled %s, want %s", got.Digest, b.Digest)
	}
	if refs, err := c.Cache().Referrers(ctx, subject, ""); err != nil || len(refs) != 0 {
		t.Errorf("cached referrers %v, %v; want none", refs, err)
	}
	if _, err := c.FetchReferrers(ctx, pinned); !errors.Is(err, registry.ErrTooLarge) {
		t.Errorf("FetchReferrers: %v, want ErrTooLarge", err)
	}
}

// pushReferrer pushes a stand-in sigstore bundle referrer of subject with
// payload as its layer.
func pushReferrer(t *testing.T, r *testregistry.Registry, repo string, subject ocispec.Descriptor, payload []byte) (layer, manifest ocispec.Descriptor) {
	t.Helper()
	empty := pushBlob(t, r, repo, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	layer = pushBlob(t, r, repo, "application/vnd.dev.sigstore.bundle.v0.3+json", payload)
	ref, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.dev.sigstore.bundle.v0.3+json", Config: empty, Layers: []ocispec.Descriptor{layer}, Subject: &subject})
	return layer, pushManifest(t, r, repo, "referrer-holder", ocispec.MediaTypeImageManifest, ref)
}
