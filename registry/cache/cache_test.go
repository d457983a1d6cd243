package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/kfm-project/kfm/registry/cache"
)

func open(t testing.TB, dir string) *cache.Cache {
	t.Helper()
	c, err := cache.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// artifact pushes a blob and a manifest pointing at it (with subject, if
// given) and returns the manifest's descriptor.
func artifact(t testing.TB, c *cache.Cache, payload string, subject *ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	layer := content.NewDescriptorFromBytes("application/octet-stream", []byte(payload))
	if err := c.Push(ctx, layer, bytes.NewReader([]byte(payload))); err != nil {
		t.Fatal(err)
	}
	if err := c.Push(ctx, ocispec.DescriptorEmptyJSON, bytes.NewReader(ocispec.DescriptorEmptyJSON.Data)); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/x-test", Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{layer}, Subject: subject})
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, m)
	if err := c.Push(ctx, desc, bytes.NewReader(m)); err != nil {
		t.Fatal(err)
	}
	return desc
}

func TestPushVerifies(t *testing.T) {
	ctx := context.Background()
	c := open(t, t.TempDir())
	desc := content.NewDescriptorFromBytes("application/octet-stream", []byte("right"))
	err := c.Push(ctx, desc, bytes.NewReader([]byte("wrong")))
	if !errors.Is(err, content.ErrMismatchedDigest) {
		t.Fatalf("push of other bytes: %v", err)
	}
	if ok, _ := c.Exists(ctx, desc); ok {
		t.Fatal("mismatched bytes were stored")
	}
	if err := c.Push(ctx, desc, bytes.NewReader([]byte("right"))); err != nil {
		t.Fatal(err)
	}
	// Pushing again is fine.
	if err := c.Push(ctx, desc, bytes.NewReader([]byte("right"))); err != nil {
		t.Fatal(err)
	}
}

func TestFetchDetectsChangesOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := open(t, dir)
	data := []byte("the cached object")
	desc := content.NewDescriptorFromBytes("application/octet-stream", data)
	if err := c.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got, err := c.FetchAll(ctx, desc, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("FetchAll: %q, %v", got, err)
	}
	if _, err := c.FetchAll(ctx, desc, 4); !errors.Is(err, cache.ErrTooLarge) {
		t.Errorf("FetchAll over the limit: %v", err)
	}
	path := filepath.Join(dir, "blobs", "sha256", desc.Digest.Encoded())
	_ = os.Chmod(path, 0o644)
	if err := os.WriteFile(path, []byte("the cached objecT"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.FetchAll(ctx, desc, 1<<20); !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("FetchAll of changed bytes: %v", err)
	}
	_ = os.WriteFile(path, []byte("short"), 0o644)
	if _, err := c.FetchAll(ctx, desc, 1<<20); !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("FetchAll of truncated bytes: %v", err)
	}
}

func TestTagsResolveAndReferrers(t *testing.T) {
	ctx := context.Background()
	c := open(t, t.TempDir())
	bundle := artifact(t, c, "bundle", nil)
	if err := c.Tag(ctx, bundle, "registry.example.com/net/x:1.0.0"); err != nil {
		t.Fatal(err)
	}
	got, err := c.Resolve(ctx, "registry.example.com/net/x:1.0.0")
	if err != nil || got.Digest != bundle.Digest {
		t.Fatalf("resolve tag: %v %v", got, err)
	}
	if got, err := c.Resolve(ctx, bundle.Digest.String()); err != nil || got.Digest != bundle.Digest {
		t.Fatalf("resolve digest: %v %v", got, err)
	}
	if _, err := c.Resolve(ctx, "registry.example.com/net/x:2.0.0"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("unknown tag: %v", err)
	}
	// A blob is not a cached manifest.
	blob := content.NewDescriptorFromBytes("application/octet-stream", []byte("bundle"))
	if _, err := c.Resolve(ctx, blob.Digest.String()); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("resolve of a blob digest: %v", err)
	}

	sig1 := artifact(t, c, "signature 1", &bundle)
	sig2 := artifact(t, c, "signature 2", &bundle)
	artifact(t, c, "unrelated", nil)
	refs, err := c.Referrers(ctx, bundle, "")
	if err != nil || len(refs) != 2 {
		t.Fatalf("referrers: %v %v", refs, err)
	}
	for _, r := range refs {
		if r.Digest != sig1.Digest && r.Digest != sig2.Digest {
			t.Errorf("unexpected referrer %s", r.Digest)
		}
	}
	if refs, _ := c.Referrers(ctx, bundle, "application/other"); len(refs) != 0 {
		t.Errorf("artifactType filter: %v", refs)
	}

	// Another Cache on the same directory (another kfm process) sees it
	// all, and a change made there is seen here.
	other := open(t, c.Dir())
	if refs, err := other.Referrers(ctx, bundle, ""); err != nil || len(refs) != 2 {
		t.Fatalf("referrers from a second cache: %v %v", refs, err)
	}
	legacy := artifact(t, other, "legacy signature", nil)
	if err := other.Tag(ctx, legacy, "registry.example.com/net/x:sha256-"+bundle.Digest.Encoded()+".sig"); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Resolve(ctx, "registry.example.com/net/x:sha256-"+bundle.Digest.Encoded()+".sig"); err != nil || got.Digest != legacy.Digest {
		t.Fatalf("first cache does not see the second's tag: %v %v", got, err)
	}
	tags, _ := c.Tags(ctx)
	if len(tags) != 2 {
		t.Errorf("tags %v", tags)
	}
	if err := c.Untag(ctx, "registry.example.com/net/x:1.0.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Resolve(ctx, "registry.example.com/net/x:1.0.0"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("untagged reference still resolves: %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var wg sync.WaitGroup
	descs := make([]ocispec.Descriptor, 16)
	for i := range descs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := open(t, dir) // one Cache per goroutine: like separate processes
			descs[i] = artifact(t, c, string(rune('a'+i)), nil)
			if err := c.Tag(ctx, descs[i], "r.example/x:"+string(rune('a'+i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	tags, err := open(t, dir).Tags(ctx)
	if err != nil || len(tags) != len(descs) {
		t.Fatalf("after concurrent writers: %d tags %v, %v", len(tags), tags, err)
	}
}
