package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Metadata is what a registry says about one bundle version without its
// object: the manifest, the config and (when asked for) the readme. Search
// and the catalog read this; installing needs Pull.
type Metadata struct {
	// Reference is pinned to the manifest's digest.
	Reference  Reference          `json:"reference"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
	Manifest   ocispec.Manifest   `json:"manifest"`
	Config     *Config            `json:"config"`
	// HasReadme: the bundle has a readme layer; Readme is its text when
	// FetchMetadata was asked for it.
	HasReadme bool   `json:"hasReadme"`
	Readme    string `json:"readme,omitempty"`
}

// Created is the manifest's creation annotation, or the zero time.
func (m *Metadata) Created() time.Time {
	t, _ := time.Parse(time.RFC3339, m.Manifest.Annotations[AnnotationCreated])
	return t
}

// Repositories lists the repositories of the registry host through the
// catalog API (/v2/_catalog, every page), calling fn with each page.
// Registries that refuse the catalog answer with ErrUnauthorized or
// ErrNotFound.
func (c *Client) Repositories(ctx context.Context, host string, fn func(repos []string) error) error {
	reg, err := c.registry(ctx, host)
	if err != nil {
		return err
	}
	if err := reg.Repositories(ctx, "", fn); err != nil {
		return classify(err, host+" catalog (/v2/_catalog)", host)
	}
	return nil
}

// Tags lists every tag of the repository of ref (all pages).
func (c *Client) Tags(ctx context.Context, ref Reference) ([]string, error) {
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return nil, err
	}
	var tags []string
	err = repo.Tags(ctx, "", func(page []string) error {
		tags = append(tags, page...)
		if len(tags) > 100000 {
			return fmt.Errorf("%w: more than 100000 tags", ErrTooLarge)
		}
		return nil
	})
	if err != nil {
		return nil, classify(err, ref.Repo()+" tags", ref.Registry)
	}
	return tags, nil
}

// FetchMetadata resolves ref and reads its manifest and config, and with
// readme the readme layer, each size-capped and verified against its
// digest; the object is never downloaded and nothing is cached. An
// artifact that is no kfm bundle fails with ErrNotBundle.
func (c *Client) FetchMetadata(ctx context.Context, ref Reference, readme bool) (*Metadata, error) {
	pinned, desc, err := c.Resolve(ctx, ref, PullOptions{})
	if err != nil {
		return nil, err
	}
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return nil, err
	}
	src := &remoteSource{repo: repo, ref: ref.String(), retry: c.retry}
	if !isImageManifest(desc.MediaType) {
		return nil, fmt.Errorf("%s: %w: it is a %s", ref, ErrNotBundle, desc.MediaType)
	}
	data, err := src.fetch(ctx, desc, c.limits.MaxManifestSize, "manifest")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	var m anyManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w: the manifest is not JSON: %v", ref, ErrNotBundle, err)
	}
	if m.Config == nil || (m.ArtifactType != ArtifactType && m.Config.MediaType != ConfigMediaType) {
		return nil, fmt.Errorf("%s: %w: it is %s", ref, ErrNotBundle, describeArtifact(m))
	}
	if m.Config.MediaType != ConfigMediaType {
		return nil, fmt.Errorf("%s: %w: artifactType %s but config media type %s (want %s)", ref, ErrInvalidBundle, m.ArtifactType, m.Config.MediaType, ConfigMediaType)
	}
	md := &Metadata{Reference: pinned, Descriptor: plain(desc)}
	if err := json.Unmarshal(data, &md.Manifest); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", ref, ErrNotBundle, err)
	}
	cfgData, err := src.fetch(ctx, *m.Config, c.limits.MaxConfigSize, "config")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if md.Config, err = ParseConfig(cfgData); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	for _, l := range m.Layers {
		if l.MediaType != ReadmeMediaType {
			continue
		}
		md.HasReadme = true
		if !readme {
			break
		}
		text, err := src.fetch(ctx, l, MaxReadmeSize, "readme")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		if err := checkReadme(text); err != nil {
			return nil, fmt.Errorf("%s: %w: readme: %w", ref, ErrInvalidBundle, err)
		}
		md.Readme = string(text)
		break
	}
	return md, nil
}

// PushArtifact pushes data as the single layer (media type mediaType) of an
// OCI artifact of type artifactType, with the empty config, tagged
// ref.Tag, and returns ref pinned to the manifest's digest. The manifest's
// creation annotation is created (pass a fixed time for reproducible
// digests).
func (c *Client) PushArtifact(ctx context.Context, ref Reference, artifactType, mediaType, title string, data []byte, created time.Time) (Reference, error) {
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return Reference{}, err
	}
	layer := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data)), Annotations: map[string]string{AnnotationTitle: title}}
	empty := ocispec.DescriptorEmptyJSON
	manifest := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       ocispec.Descriptor{MediaType: empty.MediaType, Digest: empty.Digest, Size: empty.Size},
		Layers:       []ocispec.Descriptor{layer},
		Annotations:  map[string]string{AnnotationCreated: created.UTC().Format(time.RFC3339)},
	}
	mj, err := json.Marshal(manifest)
	if err != nil {
		return Reference{}, err
	}
	for _, bl := range []struct {
		desc ocispec.Descriptor
		data []byte
	}{{plain(layer), data}, {manifest.Config, empty.Data}} {
		if err := pushIfMissing(ctx, repo, bl.desc, bl.data); err != nil {
			return Reference{}, classify(err, ref.String(), ref.Registry)
		}
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mj), Size: int64(len(mj))}
	if err := repo.PushReference(ctx, desc, bytes.NewReader(mj), ref.Tag); err != nil {
		return Reference{}, classify(err, ref.String(), ref.Registry)
	}
	return ref.Pinned(desc.Digest), nil
}

// FetchArtifact reads the single layer of the artifact ref, which must have
// artifactType artifactType and a layer of media type mediaType of at most
// max bytes, verified against its digest. It returns the layer and ref
// pinned to the manifest's digest; a missing artifact fails with
// ErrNotFound.
func (c *Client) FetchArtifact(ctx context.Context, ref Reference, artifactType, mediaType string, max int64) ([]byte, Reference, error) {
	pinned, desc, err := c.Resolve(ctx, ref, PullOptions{})
	if err != nil {
		return nil, Reference{}, err
	}
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return nil, Reference{}, err
	}
	src := &remoteSource{repo: repo, ref: ref.String(), retry: c.retry}
	data, err := src.fetch(ctx, desc, c.limits.MaxManifestSize, "manifest")
	if err != nil {
		return nil, Reference{}, fmt.Errorf("%s: %w", ref, err)
	}
	var m anyManifest
	if err := json.Unmarshal(data, &m); err != nil || m.ArtifactType != artifactType {
		return nil, Reference{}, fmt.Errorf("%s: %w: it is %s, not an artifact of type %s", ref, ErrNotBundle, describeArtifact(m), artifactType)
	}
	for _, l := range m.Layers {
		if l.MediaType != mediaType {
			continue
		}
		blob, err := src.fetch(ctx, l, max, "layer")
		if err != nil {
			return nil, Reference{}, fmt.Errorf("%s: %w", ref, err)
		}
		return blob, pinned, nil
	}
	return nil, Reference{}, fmt.Errorf("%s: %w: the artifact has no layer of type %s", ref, ErrInvalidBundle, mediaType)
}
