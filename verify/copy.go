package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// CopyOptions configure CopySignatures.
type CopyOptions struct {
	// SrcFullReferenceTags and DstFullReferenceTags: the store names tags
	// by full reference (kfm's cache) rather than bare tags (a registry).
	SrcFullReferenceTags bool
	DstFullReferenceTags bool
}

// CopySignatures copies the signatures of the manifest desc of ref from src
// to dst: every referrer holding a sigstore bundle, and the legacy signature
// manifest (tagged again in dst), each with its config and layers. Bytes are
// verified against their digests on the way. After it, Verify against dst
// sees what it would see against src, without a network. It returns the
// number of signature manifests copied (0 when there are none: that is not
// an error here; Verify decides).
func CopySignatures(ctx context.Context, src oras.ReadOnlyGraphTarget, dst oras.Target, ref string, desc ocispec.Descriptor, opts CopyOptions) (int, error) {
	if err := checkSubject(desc); err != nil {
		return 0, err
	}
	n := 0
	referrers, err := registry.Referrers(ctx, src, desc, "")
	if err != nil && !isNotFound(err) {
		return 0, fmt.Errorf("list referrers of %s: %w", desc.Digest, err)
	}
	for _, r := range referrers {
		if n >= maxSignatures {
			break
		}
		ok, err := holdsBundle(ctx, src, r)
		if err != nil {
			return n, err
		}
		if !ok {
			continue
		}
		if err := copyManifest(ctx, src, dst, r); err != nil {
			return n, fmt.Errorf("copy signature %s: %w", r.Digest, err)
		}
		n++
	}
	srcTag, err := legacyTagRef(ref, desc.Digest, opts.SrcFullReferenceTags)
	if err != nil {
		return n, err
	}
	sigDesc, err := src.Resolve(ctx, srcTag)
	switch {
	case isNotFound(err):
		return n, nil
	case err != nil:
		return n, fmt.Errorf("look up legacy signatures %s: %w", srcTag, err)
	}
	if err := copyManifest(ctx, src, dst, sigDesc); err != nil {
		return n, fmt.Errorf("copy legacy signatures %s: %w", srcTag, err)
	}
	dstTag, err := legacyTagRef(ref, desc.Digest, opts.DstFullReferenceTags)
	if err != nil {
		return n, err
	}
	if err := dst.Tag(ctx, sigDesc, dstTag); err != nil {
		return n, fmt.Errorf("tag legacy signatures %s: %w", dstTag, err)
	}
	return n + 1, nil
}

// holdsBundle reports whether the referrer manifest r has a sigstore bundle
// layer.
func holdsBundle(ctx context.Context, src content.Fetcher, r ocispec.Descriptor) (bool, error) {
	if r.MediaType != ocispec.MediaTypeImageManifest {
		return false, nil
	}
	data, err := fetchCapped(ctx, src, r, maxManifestSize)
	if err != nil {
		return false, fmt.Errorf("read referrer %s: %w", r.Digest, err)
	}
	var m ocispec.Manifest
	if json.Unmarshal(data, &m) != nil {
		return false, nil
	}
	for _, l := range m.Layers {
		if strings.HasPrefix(l.MediaType, mediaTypeBundlePrefix) {
			return true, nil
		}
	}
	return false, nil
}

// copyManifest copies the signature manifest m with its config and layers,
// but not its subject (the signed bundle is copied by whoever pulls it).
func copyManifest(ctx context.Context, src content.ReadOnlyStorage, dst content.Storage, m ocispec.Descriptor) error {
	data, err := fetchCapped(ctx, src, m, maxManifestSize)
	if err != nil {
		return err
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(data, &man); err != nil {
		return fmt.Errorf("not an image manifest: %w", err)
	}
	for _, b := range append([]ocispec.Descriptor{man.Config}, man.Layers...) {
		if ok, err := dst.Exists(ctx, b); err != nil {
			return err
		} else if ok {
			continue
		}
		blob, err := fetchCapped(ctx, src, b, maxBlobSize)
		if err != nil {
			return err
		}
		if _, err := pushBlob(ctx, dst, b.MediaType, blob); err != nil {
			return err
		}
	}
	if _, err := pushBlob(ctx, dst, m.MediaType, data); err != nil {
		return err
	}
	return nil
}
