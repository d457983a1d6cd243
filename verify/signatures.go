package verify

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// Bounds on what is read from a store: signatures are outside input.
const (
	maxManifestSize = 4 << 20
	maxBlobSize     = 1 << 20
	// maxSignatures bounds the signatures examined per digest.
	maxSignatures = 256
)

// fetchCapped reads desc from f, refusing descriptors larger than max and
// bytes that do not match desc.
func fetchCapped(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, max int64) ([]byte, error) {
	if desc.Size > max {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", desc.Digest, desc.Size, max)
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("%s: negative size", desc.Digest)
	}
	return content.FetchAll(ctx, f, desc)
}

// candidate is one signature found in a store, parsed but not verified.
type candidate struct {
	Signature
	// bundle format
	bundle *sgbundle.Bundle
	// legacy format
	payload []byte
	sig     []byte
	cert    *x509.Certificate
	chain   []*x509.Certificate
	tlog    []*tlog.Entry
	// broken: the signature cannot be used at all (why in Problem).
	broken bool
}

// findSignatures lists the signatures of desc in src: sigstore bundles among
// its referrers (whatever artifactType the referrer index claims: cosign 2.6
// indexes its bundles as application/vnd.oci.empty.v1+json; a signature
// manifest is recognised by its layer media type), and the layers of the
// legacy tag. A failure to list referrers is an error; a failure to look up
// the legacy tag (other than its absence) comes back as lookupErr, so that a
// bundle signature still counts while the caller can say what it could not
// check.
func findSignatures(ctx context.Context, src oras.ReadOnlyGraphTarget, desc ocispec.Descriptor, tagRef string) (_ []*candidate, lookupErr, _ error) {
	var out []*candidate
	referrers, err := registry.Referrers(ctx, src, desc, "")
	if err != nil && !isNotFound(err) {
		return nil, nil, fmt.Errorf("list referrers of %s: %w", desc.Digest, err)
	}
	// Stores list referrers in no particular order (a layout's index is a
	// set): sort, so that results and messages are stable.
	slices.SortFunc(referrers, func(a, b ocispec.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	for _, r := range referrers {
		if len(out) >= maxSignatures {
			break
		}
		if r.MediaType != ocispec.MediaTypeImageManifest {
			continue
		}
		cs, err := bundlesIn(ctx, src, r, desc.Digest)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, cs...)
	}
	sigDesc, err := src.Resolve(ctx, tagRef)
	switch {
	case err == nil:
		cs, err := legacyIn(ctx, src, sigDesc)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, cs...)
	case isNotFound(err):
	default:
		lookupErr = fmt.Errorf("look up legacy signatures %s: %w", tagRef, err)
	}
	if len(out) > maxSignatures {
		out = out[:maxSignatures]
	}
	return out, lookupErr, nil
}

// bundlesIn parses the sigstore bundle layers of the referrer manifest r of
// subject.
func bundlesIn(ctx context.Context, src content.Fetcher, r ocispec.Descriptor, subject digest.Digest) ([]*candidate, error) {
	data, err := fetchCapped(ctx, src, r, maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("read referrer %s: %w", r.Digest, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, nil // not a manifest we read: not a signature
	}
	var out []*candidate
	for i, l := range m.Layers {
		if !strings.HasPrefix(l.MediaType, mediaTypeBundlePrefix) {
			continue
		}
		c := &candidate{Signature: Signature{Format: FormatBundle, Manifest: r.Digest, Layer: i}}
		out = append(out, c)
		if m.Subject == nil || m.Subject.Digest != subject {
			c.fail(false, "the referrer's subject is not this manifest")
			continue
		}
		raw, err := fetchCapped(ctx, src, l, maxBlobSize)
		if err != nil {
			if isNotFound(err) || errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) {
				c.fail(false, "bundle blob: "+err.Error())
				continue
			}
			return nil, fmt.Errorf("read signature bundle %s: %w", l.Digest, err)
		}
		var pb protobundle.Bundle
		if err := protojson.Unmarshal(raw, &pb); err != nil {
			c.fail(false, "not a sigstore bundle: "+err.Error())
			continue
		}
		b, err := sgbundle.NewBundle(&pb, sgbundle.AllowCertificateChain())
		if err != nil {
			c.fail(false, "unusable sigstore bundle: "+err.Error())
			continue
		}
		c.bundle = b
		c.describeBundle()
	}
	return out, nil
}

func (c *candidate) describeBundle() {
	vm := c.bundle.GetVerificationMaterial()
	switch {
	case vm.GetPublicKey() != nil:
		c.Kind = KindKey
	default:
		c.Kind = KindCertificate
		if vc, err := c.bundle.VerificationContent(); err == nil && vc.Certificate() != nil {
			c.Claimed = claimedIdentity(vc.Certificate())
		}
	}
	env, err := c.bundle.Envelope()
	if err != nil || env == nil {
		return // message signature
	}
	st, err := env.Statement()
	if err != nil {
		c.fail(false, "DSSE payload is not an in-toto statement: "+err.Error())
		return
	}
	if st.GetPredicateType() != PredicateTypeSign {
		c.fail(false, fmt.Sprintf("an attestation (predicate type %s), not a signature", st.GetPredicateType()))
	}
}

// legacyIn parses the layers of the legacy signature manifest sigDesc.
func legacyIn(ctx context.Context, src content.Fetcher, sigDesc ocispec.Descriptor) ([]*candidate, error) {
	data, err := fetchCapped(ctx, src, sigDesc, maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("read legacy signatures %s: %w", sigDesc.Digest, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return []*candidate{{Signature: Signature{Format: FormatLegacy, Manifest: sigDesc.Digest, Problem: "the signature tag is not an image manifest"}, broken: true}}, nil
	}
	var out []*candidate
	for i, l := range m.Layers {
		if len(out) >= maxSignatures {
			break
		}
		if l.MediaType != MediaTypeSimpleSigning {
			continue
		}
		c := &candidate{Signature: Signature{Format: FormatLegacy, Manifest: sigDesc.Digest, Layer: i, Kind: KindKey}}
		out = append(out, c)
		sig, err := base64.StdEncoding.DecodeString(l.Annotations[annotationSignature])
		if err != nil || len(sig) == 0 {
			c.fail(false, "no base64 signature in annotation "+annotationSignature)
			continue
		}
		c.sig = sig
		if pemCert := l.Annotations[annotationCertificate]; pemCert != "" {
			c.Kind = KindCertificate
			certs, err := cryptoutils.UnmarshalCertificatesFromPEM([]byte(pemCert))
			if err != nil || len(certs) == 0 {
				c.fail(false, "unreadable certificate annotation")
				continue
			}
			c.cert = certs[0]
			c.Claimed = claimedIdentity(c.cert)
			if pemChain := l.Annotations[annotationChain]; pemChain != "" {
				c.chain, _ = cryptoutils.UnmarshalCertificatesFromPEM([]byte(pemChain))
			}
			if rb := l.Annotations[annotationRekorBundle]; rb != "" {
				e, err := parseRekorBundle(rb)
				if err != nil {
					c.fail(false, "unreadable transparency-log bundle annotation: "+err.Error())
					continue
				}
				c.tlog = []*tlog.Entry{e}
			}
		}
		pl, err := fetchCapped(ctx, src, l, maxBlobSize)
		if err != nil {
			if isNotFound(err) || errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) {
				c.fail(false, "payload blob: "+err.Error())
				continue
			}
			return nil, fmt.Errorf("read signature payload %s: %w", l.Digest, err)
		}
		c.payload = pl
	}
	return out, nil
}

// rekorBundle is cosign's dev.sigstore.cosign/bundle annotation: the
// transparency log's signed entry timestamp over the entry.
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

func parseRekorBundle(s string) (*tlog.Entry, error) {
	var rb rekorBundle
	if err := json.Unmarshal([]byte(s), &rb); err != nil {
		return nil, err
	}
	body, err := base64.StdEncoding.DecodeString(rb.Payload.Body)
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	logID, err := hex.DecodeString(rb.Payload.LogID)
	if err != nil {
		return nil, fmt.Errorf("logID: %w", err)
	}
	var kv struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(body, &kv); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	return tlog.ParseTransparencyLogEntry(&protorekor.TransparencyLogEntry{
		LogIndex:          rb.Payload.LogIndex,
		LogId:             &protocommon.LogId{KeyId: logID},
		KindVersion:       &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion},
		IntegratedTime:    rb.Payload.IntegratedTime,
		InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
		CanonicalizedBody: body,
	})
}

// claimedIdentity reads subject and issuer from a certificate, unverified.
func claimedIdentity(cert *x509.Certificate) *Signer {
	sum, err := certificate.SummarizeCertificate(cert)
	if err != nil {
		return nil
	}
	return &Signer{Subject: sum.SubjectAlternativeName, Issuer: sum.Issuer}
}

func (c *candidate) fail(untrusted bool, problem string) {
	if c.Problem == "" {
		c.Problem = problem
	}
	c.broken = c.broken || !untrusted
	c.untrusted = untrusted
}

// legacyEntity presents a legacy signature to sigstore-go's verifier: a
// message signature over the simple-signing payload, with the certificate
// and transparency-log entry of its annotations, or a bare public key.
type legacyEntity struct {
	c    *candidate
	hash crypto.Hash
}

func (e *legacyEntity) HasInclusionPromise() bool { return len(e.c.tlog) > 0 }
func (e *legacyEntity) HasInclusionProof() bool   { return false }
func (e *legacyEntity) Timestamps() ([][]byte, error) {
	return nil, nil
}
func (e *legacyEntity) TlogEntries() ([]*tlog.Entry, error) { return e.c.tlog, nil }
func (e *legacyEntity) Version() (string, error)            { return "v0.1", nil }

func (e *legacyEntity) SignatureContent() (sgverify.SignatureContent, error) {
	h := e.hash.New()
	h.Write(e.c.payload)
	alg := map[crypto.Hash]string{crypto.SHA256: "SHA2_256", crypto.SHA384: "SHA2_384", crypto.SHA512: "SHA2_512"}[e.hash]
	return sgbundle.NewMessageSignature(h.Sum(nil), alg, e.c.sig), nil
}

func (e *legacyEntity) VerificationContent() (sgverify.VerificationContent, error) {
	if e.c.cert != nil {
		return sgbundle.NewCertificate(e.c.cert), nil
	}
	return keyContent{}, nil
}

// keyContent is the verification content of a signature made with a key
// that names no key: the trusted material decides which key checks it.
type keyContent struct{}

func (keyContent) CompareKey(key any, tm root.TrustedMaterial) bool {
	v, err := tm.PublicKeyVerifier("")
	if err != nil {
		return false
	}
	pub, err := v.PublicKey()
	if err != nil {
		return false
	}
	eq, ok := key.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}

func (keyContent) ValidAtTime(t time.Time, tm root.TrustedMaterial) bool {
	v, err := tm.PublicKeyVerifier("")
	return err == nil && v.ValidAtTime(t)
}
func (keyContent) Certificate() *x509.Certificate          { return nil }
func (keyContent) Intermediates() []*x509.Certificate      { return nil }
func (k keyContent) PublicKey() sgverify.PublicKeyProvider { return k }
func (keyContent) Hint() string                            { return "" }
func hashOf(pub crypto.PublicKey) crypto.Hash {
	if alg, err := signature.GetDefaultAlgorithmDetails(pub); err == nil && alg.GetHashType() != 0 {
		return alg.GetHashType()
	}
	return crypto.SHA256
}
