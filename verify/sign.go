package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	intotov1 "github.com/in-toto/attestation/go/v1"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// SignOptions configure Sign.
type SignOptions struct {
	// Format is the signature format; the zero value is FormatBundle.
	Format Format
	// Annotations are signed claims added to the signature: the in-toto
	// subject's annotations (bundle) or the simple-signing payload's
	// "optional" object (legacy), as cosign sign -a does.
	Annotations map[string]string
	// FullReferenceTags: the store names tags by full reference
	// ("registry/repository:tag"), as kfm's local cache does, instead of by
	// bare tag as a registry repository does.
	FullReferenceTags bool

	// Keyless signing (bundle format only): sigstore-go's certificate
	// provider (a Fulcio), transparency logs and timestamp authorities.
	// All nil: the key alone signs, as cosign sign --key
	// --tlog-upload=false does.
	CertificateProvider  sign.CertificateProvider
	TransparencyLogs     []sign.Transparency
	TimestampAuthorities []*sign.TimestampAuthority
}

// Signed describes a signature Sign wrote.
type Signed struct {
	Format Format `json:"format"`
	// Subject is the signed manifest digest.
	Subject digest.Digest `json:"subject"`
	// Manifest is the signature manifest: the bundle referrer, or the
	// legacy .sig manifest (which accumulates signatures).
	Manifest ocispec.Descriptor `json:"manifest"`
	// Tag is the legacy signature tag (legacy format only).
	Tag string `json:"tag,omitempty"`
	// Key is the signing key's fingerprint.
	Key string `json:"key"`
}

// Sign signs the manifest desc of ref (a reference into dst's repository; its
// repository names the image in legacy payloads) with s, and stores the
// signature in dst next to it.
func Sign(ctx context.Context, dst oras.GraphTarget, ref string, desc ocispec.Descriptor, s *SigningKey, opts SignOptions) (*Signed, error) {
	if err := checkSubject(desc); err != nil {
		return nil, err
	}
	ok, err := dst.Exists(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", desc.Digest, err)
	}
	if !ok {
		return nil, fmt.Errorf("sign %s: %w: the manifest is not in the repository (push it first)", desc.Digest, errdef.ErrNotFound)
	}
	switch opts.Format {
	case FormatBundle, "":
		b, err := NewBundle(ctx, desc, s, opts)
		if err != nil {
			return nil, err
		}
		m, err := AttachBundle(ctx, dst, desc, b)
		if err != nil {
			return nil, err
		}
		return &Signed{Format: FormatBundle, Subject: desc.Digest, Manifest: m, Key: s.Fingerprint()}, nil
	case FormatLegacy:
		if opts.CertificateProvider != nil || len(opts.TransparencyLogs) > 0 || len(opts.TimestampAuthorities) > 0 {
			return nil, errors.New("kfm writes keyless signatures in the bundle format only (drop --signature-format legacy)")
		}
		return signLegacy(ctx, dst, ref, desc, s, opts)
	default:
		return nil, fmt.Errorf("unknown signature format %q: use bundle or legacy", opts.Format)
	}
}

func checkSubject(desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("subject %q: %w", desc.Digest, err)
	}
	if desc.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("subject %s: only sha256 digests are signed", desc.Digest)
	}
	if desc.Size <= 0 || desc.MediaType == "" {
		return fmt.Errorf("subject %s: incomplete descriptor (media type and size are needed)", desc.Digest)
	}
	return nil
}

// Statement returns the in-toto statement a bundle signature signs: subject
// the manifest digest (with annotations), predicate type
// https://sigstore.dev/cosign/sign/v1, empty predicate, as cosign writes it.
func Statement(d digest.Digest, annotations map[string]string) ([]byte, error) {
	subject := &intotov1.ResourceDescriptor{Digest: map[string]string{string(d.Algorithm()): d.Encoded()}}
	if len(annotations) > 0 {
		m := make(map[string]any, len(annotations))
		for k, v := range annotations {
			m[k] = v
		}
		st, err := structpb.NewStruct(m)
		if err != nil {
			return nil, err
		}
		subject.Annotations = st
	}
	stmt := &intotov1.Statement{
		Type:          intotov1.StatementTypeUri,
		Subject:       []*intotov1.ResourceDescriptor{subject},
		PredicateType: PredicateTypeSign,
		Predicate:     &structpb.Struct{},
	}
	if err := stmt.Validate(); err != nil {
		return nil, err
	}
	return protojson.Marshal(stmt)
}

// NewBundle signs the statement over desc and returns the sigstore bundle
// (v0.3, DSSE), with the certificate, transparency-log entries and
// timestamps opts asks for.
func NewBundle(ctx context.Context, desc ocispec.Descriptor, s *SigningKey, opts SignOptions) (*protobundle.Bundle, error) {
	if err := checkSubject(desc); err != nil {
		return nil, err
	}
	stmt, err := Statement(desc.Digest, opts.Annotations)
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	b, err := sign.Bundle(&sign.DSSEData{Data: stmt, PayloadType: payloadTypeInToto}, s, sign.BundleOptions{
		Context:              ctx,
		CertificateProvider:  opts.CertificateProvider,
		TransparencyLogs:     opts.TransparencyLogs,
		TimestampAuthorities: opts.TimestampAuthorities,
	})
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", desc.Digest, err)
	}
	return b, nil
}

// AttachBundle stores the sigstore bundle b in dst as an OCI 1.1 referrer of
// desc (artifactType application/vnd.dev.sigstore.bundle.v0.3+json, one
// layer holding the bundle JSON), as cosign does. On a registry without the
// referrers API oras-go maintains the referrers tag (sha256-<hex>) instead.
func AttachBundle(ctx context.Context, dst oras.Target, desc ocispec.Descriptor, b *protobundle.Bundle) (ocispec.Descriptor, error) {
	data, err := protojson.Marshal(b)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer, err := pushBlob(ctx, dst, MediaTypeBundle, data)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push signature bundle: %w", err)
	}
	content := "dsse-envelope"
	if b.GetMessageSignature() != nil {
		content = "message-signature"
	}
	subject := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
	m, err := oras.PackManifest(ctx, dst, oras.PackManifestVersion1_1, MediaTypeBundle, oras.PackManifestOptions{
		Subject: &subject,
		Layers:  []ocispec.Descriptor{layer},
		ManifestAnnotations: map[string]string{
			annotationContent:   content,
			annotationPredicate: PredicateTypeSign,
		},
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push signature manifest: %w", err)
	}
	return m, nil
}

// legacyTagRef is the reference of the legacy signature tag in a store.
func legacyTagRef(ref string, d digest.Digest, fullReferenceTags bool) (string, error) {
	tag := LegacyTag(d)
	if !fullReferenceTags {
		return tag, nil
	}
	repo, err := repositoryOf(ref)
	if err != nil {
		return "", err
	}
	return repo + ":" + tag, nil
}

// LegacyPayload returns the simple-signing payload cosign signs for the
// manifest d of repository repo ("registry/path").
func LegacyPayload(repo string, d digest.Digest, annotations map[string]string) ([]byte, error) {
	img, err := name.NewDigest(repo+"@"+d.String(), name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("%s@%s: %w", repo, d, err)
	}
	var opt map[string]any
	if len(annotations) > 0 {
		opt = make(map[string]any, len(annotations))
		for k, v := range annotations {
			opt[k] = v
		}
	}
	return payload.Cosign{Image: img, Annotations: opt}.MarshalJSON()
}

func signLegacy(ctx context.Context, dst oras.GraphTarget, ref string, desc ocispec.Descriptor, s *SigningKey, opts SignOptions) (*Signed, error) {
	repo, err := repositoryOf(ref)
	if err != nil {
		return nil, err
	}
	pl, err := LegacyPayload(repo, desc.Digest, opts.Annotations)
	if err != nil {
		return nil, err
	}
	sig, _, err := s.SignData(ctx, pl)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", desc.Digest, err)
	}
	layer := content.NewDescriptorFromBytes(MediaTypeSimpleSigning, pl)
	layer.Annotations = map[string]string{annotationSignature: base64.StdEncoding.EncodeToString(sig)}
	tagRef, err := legacyTagRef(ref, desc.Digest, opts.FullReferenceTags)
	if err != nil {
		return nil, err
	}
	m, err := appendLegacy(ctx, dst, tagRef, layer, pl)
	if err != nil {
		return nil, err
	}
	return &Signed{Format: FormatLegacy, Subject: desc.Digest, Manifest: m, Tag: LegacyTag(desc.Digest), Key: s.Fingerprint()}, nil
}

// appendLegacy adds the signature layer (whose blob is pl) to the legacy
// signature manifest tagged tagRef in dst, creating it if needed, as cosign
// does: the manifest is an OCI image manifest whose config is an image
// config listing the layers, and the tag moves to the new manifest.
func appendLegacy(ctx context.Context, dst oras.GraphTarget, tagRef string, layer ocispec.Descriptor, pl []byte) (ocispec.Descriptor, error) {
	var layers []ocispec.Descriptor
	var annotations map[string]string
	cur, err := dst.Resolve(ctx, tagRef)
	switch {
	case err == nil:
		data, err := fetchCapped(ctx, dst, cur, maxManifestSize)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("read existing signatures %s: %w", tagRef, err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("existing %s is not an image manifest: %w", tagRef, err)
		}
		layers, annotations = m.Layers, m.Annotations
	case isNotFound(err):
	default:
		return ocispec.Descriptor{}, fmt.Errorf("read existing signatures %s: %w", tagRef, err)
	}
	// The same signature twice is one signature.
	if !slices.ContainsFunc(layers, func(l ocispec.Descriptor) bool {
		return l.Digest == layer.Digest && maps.Equal(l.Annotations, layer.Annotations)
	}) {
		layers = append(layers, layer)
	}
	if _, err := pushBlob(ctx, dst, layer.MediaType, pl); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push signature payload: %w", err)
	}
	cfg := ocispec.Image{RootFS: ocispec.RootFS{Type: "layers"}}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.Digest)
	}
	cfgData, err := json.Marshal(cfg)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	cfgDesc, err := pushBlob(ctx, dst, ocispec.MediaTypeImageConfig, cfgData)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push signature config: %w", err)
	}
	m := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      cfgDesc,
		Layers:      layers,
		Annotations: annotations,
	}
	mData, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	mDesc, err := oras.TagBytes(ctx, dst, ocispec.MediaTypeImageManifest, mData, tagRef)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push signature manifest %s: %w", tagRef, err)
	}
	return mDesc, nil
}

// pushBlob pushes data unless dst already has it. An upload whose answer
// was lost may have taken effect (sent again, its session is gone: 404), so
// after a failed push dst is asked whether it holds the blob.
func pushBlob(ctx context.Context, dst content.Storage, mediaType string, data []byte) (ocispec.Descriptor, error) {
	desc := content.NewDescriptorFromBytes(mediaType, data)
	if err := dst.Push(ctx, desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		if ok, xerr := dst.Exists(ctx, desc); xerr != nil || !ok {
			return ocispec.Descriptor{}, err
		}
	}
	return desc, nil
}
