package verify

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// The install path end to end, as the lead wires it: publish a real bundle,
// sign it, pull it into kfm's cache with its signatures
// (registry.Client.Pull and FetchReferrers), stop the registry, and verify
// from the cache alone. Also copies with CopySignatures into a second cache.
func TestVerifyFromKfmCache(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	key := newTestKey(t)
	obj, err := os.ReadFile("../examples/programs/xdp_count.o")
	if err != nil {
		t.Fatal(err)
	}
	newClient := func() *registry.Client {
		c, err := cache.Open(ctx, filepath.Join(t.TempDir(), "oci"))
		if err != nil {
			t.Fatal(err)
		}
		cl, err := registry.NewClient(registry.Options{Cache: c, Credentials: credentials.NewMemoryStore()})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	publisher := newClient()
	publish := func(tag, version string) (registry.Reference, ocispec.Descriptor) {
		b, err := registry.Pack(obj, registry.PackOptions{Name: "xdp-count", Version: version, ObjectName: "xdp_count.o"})
		if err != nil {
			t.Fatal(err)
		}
		ref, err := registry.ParseReference(reg.Host() + "/net/xdp-count:" + tag)
		if err != nil {
			t.Fatal(err)
		}
		pinned, err := publisher.Publish(ctx, b, ref)
		if err != nil {
			t.Fatal(err)
		}
		return pinned, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: b.Digest, Size: b.Size}
	}
	signed, signedDesc := publish("1.0.0", "1.0.0")
	unsigned, unsignedDesc := publish("2.0.0", "2.0.0")
	repo, err := publisher.Repository(ctx, signed)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Format{FormatBundle, FormatLegacy} {
		if _, err := Sign(ctx, repo, signed.String(), signedDesc, key.priv, SignOptions{Format: f}); err != nil {
			t.Fatal(err)
		}
	}

	installer := newClient()
	other, err := openCache(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []registry.Reference{signed, unsigned} {
		if _, err := installer.Pull(ctx, ref, registry.PullOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := installer.FetchReferrers(ctx, ref); err != nil {
			t.Fatal(err)
		}
		desc, err := installer.Cache().Resolve(ctx, ref.Digest.String())
		if err != nil {
			t.Fatal(err)
		}
		if err := orasCopyGraph(ctx, installer.Cache(), other, desc); err != nil {
			t.Fatal(err)
		}
		if _, err := CopySignatures(ctx, installer.Cache(), other, ref.String(), desc, CopyOptions{SrcFullReferenceTags: true, DstFullReferenceTags: true}); err != nil {
			t.Fatal(err)
		}
	}
	reg.Stop()

	opts := &VerifyOptions{FullReferenceTags: true}
	res, err := Verify(ctx, installer.Cache(), signed.String(), signedDesc, keyPolicy(key.pub), opts)
	if err != nil {
		t.Fatalf("signed bundle from the cache, offline: %v", err)
	}
	if len(res.Signatures) != 2 || res.Signer.Key != key.pub.Fingerprint {
		t.Fatalf("want both signatures, accepted key %s: %+v", key.pub.Fingerprint, res)
	}
	if _, err := Verify(ctx, installer.Cache(), unsigned.String(), unsignedDesc, keyPolicy(key.pub), opts); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned bundle from the cache: %v, want ErrUnsigned", err)
	}
	if _, err := Verify(ctx, other, signed.String(), signedDesc, keyPolicy(key.pub), opts); err != nil {
		t.Fatalf("signatures copied from cache to cache: %v", err)
	}
}

func orasCopyGraph(ctx context.Context, src *cache.Cache, dst *cache.Cache, desc ocispec.Descriptor) error {
	return oras.CopyGraph(ctx, src, dst, desc, oras.DefaultCopyGraphOptions)
}

// openCache makes a second kfm cache.
func openCache(t *testing.T) (*cache.Cache, error) {
	return cache.Open(context.Background(), filepath.Join(t.TempDir(), "oci"))
}
