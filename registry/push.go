package registry

import (
	"bytes"
	"context"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Publish pushes a packed bundle (from Pack) to ref and returns ref pinned to
// the bundle's digest. Blobs the repository already has are not sent again.
// A ref with a digest must carry the bundle's own digest.
func (c *Client) Publish(ctx context.Context, b *Bundle, ref Reference) (Reference, error) {
	if b.manifestJSON == nil || b.configJSON == nil {
		return Reference{}, fmt.Errorf("%s: only a bundle made by Pack can be published", ref)
	}
	if ref.IsPinned() && ref.Digest != b.Digest {
		return Reference{}, fmt.Errorf("%s: %w: the bundle's digest is %s", ref, ErrDigestMismatch, b.Digest)
	}
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return Reference{}, err
	}
	type upload struct {
		desc ocispec.Descriptor
		data []byte
	}
	uploads := []upload{{b.Manifest.Layers[0], b.Object}}
	for _, l := range b.Manifest.Layers[1:] {
		if l.MediaType == ReadmeMediaType {
			uploads = append(uploads, upload{l, []byte(b.Readme)})
		}
	}
	uploads = append(uploads, upload{b.Manifest.Config, b.configJSON})
	for _, bl := range uploads {
		if err := pushIfMissing(ctx, repo, plain(bl.desc), bl.data); err != nil {
			return Reference{}, classify(err, ref.String(), ref.Registry)
		}
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: b.Digest, Size: b.Size}
	if ref.Tag != "" {
		err = repo.PushReference(ctx, desc, bytes.NewReader(b.manifestJSON), ref.Tag)
	} else {
		err = repo.Push(ctx, desc, bytes.NewReader(b.manifestJSON))
	}
	if err != nil {
		return Reference{}, classify(err, ref.String(), ref.Registry)
	}
	pinned := ref.Pinned(b.Digest)
	b.Reference = pinned
	return pinned, nil
}
