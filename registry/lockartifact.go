package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
)

// A lock artifact carries a kfm.lock through a registry, for node agents
// that follow a tag (kfm agent --source oci://REF): an OCI 1.1 artifact
// with artifactType LockArtifactType, no config (the empty descriptor) and
// one layer of media type LockMediaType holding the lock's YAML. It is
// signed like a bundle, and a node verifies it against its own policy.
const (
	LockArtifactType = "application/vnd.kfm.lock.v1"
	LockMediaType    = "application/vnd.kfm.lock.v1+yaml"
	// MaxLockSize caps a fetched lock.
	MaxLockSize = 4 << 20
)

// PushLock pushes lock (kfm.lock's bytes) to ref's repository, calls
// beforeTag (nil: none) with the manifest, and then tags it with ref's tag:
// a signer signs there, so that the tag never names an unsigned lock that
// agents would see and refuse. The manifest's creation time comes from
// SOURCE_DATE_EPOCH, so that the same lock gives the same digest.
func (c *Client) PushLock(ctx context.Context, ref Reference, lock []byte, beforeTag func(ocispec.Descriptor) error) (ocispec.Descriptor, error) {
	if ref.Tag == "" {
		return ocispec.Descriptor{}, fmt.Errorf("%s: a lock is pushed to a tag: %w", ref, ErrInvalidReference)
	}
	if len(lock) > MaxLockSize {
		return ocispec.Descriptor{}, fmt.Errorf("lock: %d bytes: %w (at most %d)", len(lock), ErrTooLarge, MaxLockSize)
	}
	created, err := SourceDateEpoch()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer := content.NewDescriptorFromBytes(LockMediaType, lock)
	layer.Annotations = map[string]string{ocispec.AnnotationTitle: "kfm.lock"}
	if err := pushIfMissing(ctx, repo, layer, lock); err != nil {
		return ocispec.Descriptor{}, classify(err, ref.Registry, ref.String())
	}
	desc, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, LockArtifactType, oras.PackManifestOptions{
		Layers:              []ocispec.Descriptor{layer},
		ManifestAnnotations: map[string]string{ocispec.AnnotationCreated: created.UTC().Format(time.RFC3339)},
	})
	if err != nil {
		return ocispec.Descriptor{}, classify(err, ref.Registry, ref.String())
	}
	if beforeTag != nil {
		if err := beforeTag(desc); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if err := repo.Tag(ctx, desc, ref.Tag); err != nil {
		return ocispec.Descriptor{}, classify(err, ref.Registry, ref.String())
	}
	return desc, nil
}

// pushIfMissing pushes data as desc unless t holds it. An upload whose
// answer was lost may have taken effect (sent again, its session is gone:
// 404), so after a failed push t is asked again whether it holds desc.
func pushIfMissing(ctx context.Context, t oras.Target, desc ocispec.Descriptor, data []byte) error {
	ok, err := t.Exists(ctx, desc)
	if err != nil || ok {
		return err
	}
	if err := t.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		if ok, xerr := t.Exists(ctx, desc); xerr == nil && ok {
			return nil
		}
		return err
	}
	return nil
}

// ResolveLock resolves ref (a tag) to the manifest it names now.
func (c *Client) ResolveLock(ctx context.Context, ref Reference) (ocispec.Descriptor, error) {
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	target := ref.Tag
	if ref.Digest != "" {
		target = ref.Digest.String()
	}
	desc, err := repo.Resolve(ctx, target)
	if err != nil {
		return ocispec.Descriptor{}, classify(err, ref.Registry, ref.String())
	}
	return desc, nil
}

// FetchLock reads the lock artifact desc of ref's repository: every byte
// is checked against its digest and size-capped, and an artifact of another
// type is refused with ErrInvalidBundle naming what it is.
func (c *Client) FetchLock(ctx context.Context, ref Reference, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > c.limits.MaxManifestSize {
		return nil, fmt.Errorf("%s: manifest of %d bytes: %w", ref, desc.Size, ErrTooLarge)
	}
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return nil, err
	}
	raw, err := content.FetchAll(ctx, repo, desc)
	if err != nil {
		return nil, classify(err, ref.Registry, ref.String())
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w: %v", ref, ErrInvalidBundle, err)
	}
	if m.ArtifactType != LockArtifactType {
		return nil, fmt.Errorf("%s@%s is not a kfm lock (artifactType %q, want %s; push one with kfm push-lock): %w", ref.Repo(), desc.Digest, m.ArtifactType, LockArtifactType, ErrInvalidBundle)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != LockMediaType {
		return nil, fmt.Errorf("%s@%s: a lock artifact has one layer of type %s: %w", ref.Repo(), desc.Digest, LockMediaType, ErrInvalidBundle)
	}
	l := m.Layers[0]
	if l.Size > MaxLockSize {
		return nil, fmt.Errorf("%s@%s: lock of %d bytes: %w", ref.Repo(), desc.Digest, l.Size, ErrTooLarge)
	}
	if err := l.Digest.Validate(); err != nil || l.Digest.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("%s@%s: lock layer digest %q: %w", ref.Repo(), desc.Digest, l.Digest, ErrInvalidBundle)
	}
	data, err := content.FetchAll(ctx, repo, l)
	if err != nil {
		return nil, classify(err, ref.Registry, ref.String())
	}
	return data, nil
}
