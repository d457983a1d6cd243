package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/kfm-project/kfm/registry/cache"
)

// Storing a manifest with a signature referrer and finding it again, as
// offline verification does.
func ExampleCache_Referrers() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "kfm-cache")
	defer os.RemoveAll(dir)
	c, err := cache.Open(ctx, dir)
	if err != nil {
		panic(err)
	}
	push := func(mediaType string, data []byte) ocispec.Descriptor {
		d := content.NewDescriptorFromBytes(mediaType, data)
		if err := c.Push(ctx, d, bytes.NewReader(data)); err != nil {
			panic(err)
		}
		return d
	}
	manifest := func(artifactType string, layer ocispec.Descriptor, subject *ocispec.Descriptor) []byte {
		m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			ArtifactType: artifactType, Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{layer}, Subject: subject})
		return m
	}
	push(ocispec.MediaTypeEmptyJSON, []byte("{}"))
	object := push("application/vnd.kfm.bpf.object.v1+elf", []byte("\x7fELF..."))
	bundle := push(ocispec.MediaTypeImageManifest, manifest("application/vnd.kfm.bundle.v1", object, nil))
	if err := c.Tag(ctx, bundle, "registry.example.com/net/ratelimit:1.2.0"); err != nil {
		panic(err)
	}
	sig := push("application/vnd.dev.sigstore.bundle.v0.3+json", []byte(`{"stand-in":true}`))
	referrer := push(ocispec.MediaTypeImageManifest, manifest("application/vnd.dev.sigstore.bundle.v0.3+json", sig, &bundle))

	got, _ := c.Resolve(ctx, "registry.example.com/net/ratelimit:1.2.0")
	refs, _ := c.Referrers(ctx, got, "")
	fmt.Println(got.Digest == bundle.Digest, len(refs), refs[0].Digest == referrer.Digest)
	// Output: true 1 true
}
