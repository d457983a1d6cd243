package verify

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/errdef"

	"github.com/kfm-project/kfm/registry/cache"
)

// Format is a signature format.
type Format string

// The signature formats kfm writes and reads.
const (
	// FormatBundle is the sigstore bundle v0.3 stored as an OCI 1.1
	// referrer of the signed manifest (cosign sign --new-bundle-format,
	// the default of cosign 3).
	FormatBundle Format = "bundle"
	// FormatLegacy is cosign's sha256-<hex>.sig tag with simple-signing
	// payloads (cosign 2's default).
	FormatLegacy Format = "legacy"
)

// ParseFormat parses "bundle" or "legacy".
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case FormatBundle, FormatLegacy:
		return Format(s), nil
	}
	return "", fmt.Errorf("unknown signature format %q: use bundle or legacy", s)
}

// Media types and annotations of the formats. They are cosign's, so that
// each tool reads what the other writes.
const (
	// MediaTypeBundle is the artifactType of a bundle referrer and the
	// media type of its single layer, the bundle JSON.
	MediaTypeBundle = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// mediaTypeBundlePrefix recognises every sigstore bundle layer
	// (v0.1 and v0.2 spelled "...bundle+json;version=0.x").
	mediaTypeBundlePrefix = "application/vnd.dev.sigstore.bundle"
	// MediaTypeSimpleSigning is the layer media type of a legacy
	// signature: the simple-signing payload.
	MediaTypeSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	// PredicateTypeSign is the in-toto predicate type of a signature
	// (as opposed to an attestation) in a bundle.
	PredicateTypeSign = "https://sigstore.dev/cosign/sign/v1"
	// payloadTypeInToto is the DSSE payload type of an in-toto statement.
	payloadTypeInToto = "application/vnd.in-toto+json"

	annotationSignature   = "dev.cosignproject.cosign/signature"
	annotationCertificate = "dev.sigstore.cosign/certificate"
	annotationChain       = "dev.sigstore.cosign/chain"
	annotationRekorBundle = "dev.sigstore.cosign/bundle"
	annotationContent     = "dev.sigstore.bundle.content"
	annotationPredicate   = "dev.sigstore.bundle.predicateType"
)

// LegacyTag is the tag of the legacy signatures of the manifest d:
// "sha256-<hex>.sig".
func LegacyTag(d digest.Digest) string {
	return strings.Replace(d.String(), ":", "-", 1) + ".sig"
}

// isNotFound reports whether err says that content or a tag is absent: oras'
// errdef.ErrNotFound, or the cache's own cache.ErrNotFound (which does not
// wrap it).
func isNotFound(err error) bool {
	return errors.Is(err, errdef.ErrNotFound) || errors.Is(err, cache.ErrNotFound)
}
