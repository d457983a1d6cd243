package registry

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry/bpfman"
)

// Format says what kind of artifact a bundle was read from.
type Format string

// Formats kfm reads.
const (
	// FormatKFM is kfm's own bundle (artifactType ArtifactType).
	FormatKFM Format = "kfm"
	// FormatBpfman is a bpfman bytecode image.
	FormatBpfman Format = "bpfman"
)

// Bundle is a bundle in memory: its manifest, config and ELF object. Pack
// makes one from an object; Client.Pull and Client.Open read one from a
// registry or the cache. A bpfman bytecode image becomes a Bundle too, its
// Config derived from the object and the image labels.
type Bundle struct {
	// Reference is where the bundle came from, pinned to Digest; zero for
	// a bundle made by Pack that was not published yet.
	Reference Reference `json:"reference"`
	// Digest is the digest of the manifest the reference resolved to: what
	// signatures sign, what the lockfile records and what gets installed.
	// For a multi-platform bpfman image it is the index's digest.
	Digest digest.Digest `json:"digest"`
	// Size is the size of that manifest.
	Size   int64  `json:"size"`
	Format Format `json:"format"`
	// Config is the bundle config (derived, for bpfman images).
	Config *Config `json:"config"`
	// ObjectName is the object's file name (layer title or tar entry).
	ObjectName string `json:"objectName"`
	// ObjectDigest is the digest of the ELF object itself (for bpfman
	// images: of the uncompressed file, not of the layer).
	ObjectDigest digest.Digest `json:"objectDigest"`
	// Object holds the ELF bytes.
	Object []byte `json:"-"`
	// Readme is the markdown readme of the bundle's readme layer
	// (ReadmeMediaType); empty when it has none.
	Readme string `json:"readme,omitempty"`
	// Manifest is the image manifest that holds the object (for a
	// multi-platform bpfman image: the one chosen for this host).
	Manifest ocispec.Manifest `json:"manifest"`
	// ManifestDigest is Manifest's digest: equal to Digest except for
	// multi-platform bpfman images.
	ManifestDigest digest.Digest `json:"manifestDigest"`
	// Bpfman holds the labels of a bpfman image; nil for kfm bundles.
	Bpfman *bpfman.Metadata `json:"bpfman,omitempty"`

	manifestJSON []byte // exact bytes, for Publish
	configJSON   []byte
}

// Descriptor describes the bundle's (root) manifest.
func (b *Bundle) Descriptor() ocispec.Descriptor {
	mt := b.Manifest.MediaType
	if b.Digest != b.ManifestDigest {
		mt = ocispec.MediaTypeImageIndex
	}
	return ocispec.Descriptor{MediaType: mt, Digest: b.Digest, Size: b.Size, ArtifactType: b.Manifest.ArtifactType}
}

// ManifestJSON returns the exact manifest bytes of a packed bundle (nil for
// pulled ones, whose bytes stay in the cache).
func (b *Bundle) ManifestJSON() []byte { return b.manifestJSON }

// ConfigJSON returns the exact config bytes of a packed bundle.
func (b *Bundle) ConfigJSON() []byte { return b.configJSON }

// Describe parses the bundle's ELF object. The name in errors is the
// bundle's reference.
func (b *Bundle) Describe() (*bpf.Object, error) {
	name := b.ObjectName
	if b.Reference.Repository != "" {
		name = b.Reference.String()
	}
	return bpf.ParseObject(name, b.Object)
}

// MarshalJSON is the bundle as `kfm inspect -o json` shows it.
func (b *Bundle) MarshalJSON() ([]byte, error) {
	type plain Bundle
	return json.Marshal((*plain)(b))
}

// String is the pinned reference, or the name when unpublished.
func (b *Bundle) String() string {
	if b.Reference.Repository != "" {
		return b.Reference.String()
	}
	return fmt.Sprintf("%s@%s", b.Config.Name, b.Digest)
}
