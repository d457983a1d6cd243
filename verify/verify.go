package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// Kinds of signing material.
const (
	KindKey         = "key"
	KindCertificate = "certificate"
)

// Signer is who made a signature: a key, by fingerprint, or a keyless
// identity, by certificate subject and OIDC issuer. It has the shape of the
// lockfile's signer.
type Signer struct {
	Key     string `json:"key,omitempty"`
	Subject string `json:"subject,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
}

func (s *Signer) String() string {
	switch {
	case s == nil:
		return "none"
	case s.Key != "":
		return "key " + s.Key
	default:
		return fmt.Sprintf("%s (issuer %s)", s.Subject, s.Issuer)
	}
}

// Signature is one signature found for a digest, and what became of it.
type Signature struct {
	Format Format `json:"format"`
	// Manifest is the signature manifest holding it (the bundle referrer,
	// or the legacy .sig manifest) and Layer its layer index there.
	Manifest digest.Digest `json:"manifest"`
	Layer    int           `json:"layer"`
	// Kind is KindKey or KindCertificate.
	Kind string `json:"kind,omitempty"`
	// Claimed is the identity a certificate claims (read, not verified).
	Claimed *Signer `json:"claimed,omitempty"`
	// Verified: the signature verified under the matching rule, by Signer.
	Verified bool    `json:"verified"`
	Signer   *Signer `json:"signer,omitempty"`
	// Problem says why it was not accepted.
	Problem string `json:"problem,omitempty"`

	untrusted bool // valid for all we know, but not by an accepted signer
}

func (s *Signature) describe() string {
	short := s.Manifest.Encoded()
	if len(short) > 12 {
		short = short[:12]
	}
	d := fmt.Sprintf("%s signature %s", s.Format, short)
	if s.Format == FormatLegacy {
		d += fmt.Sprintf(" layer %d", s.Layer)
	}
	return d
}

// Result is the outcome of Verify.
type Result struct {
	// Reference and Digest are what was verified: the digest is what may
	// be installed.
	Reference string        `json:"reference"`
	Digest    digest.Digest `json:"digest"`
	// Rule is the policy rule that decided ("policy.yaml:12 (pattern)").
	Rule string `json:"rule,omitempty"`
	// Signatures lists every signature found.
	Signatures []Signature `json:"signatures"`
	// Signer is the accepted signer: the first signature that verified.
	// Nil when Verify refused.
	Signer *Signer `json:"signer,omitempty"`
}

// maxProblems bounds the signatures an error message describes.
const maxProblems = 5

// Accepts reports whether s made one of the signatures that verified. The
// lockfile records one signer (Result.Signer); when several signers are
// accepted, which one comes first may differ between stores, so apply
// --locked asks whether the recorded one is among them.
func (r *Result) Accepts(s Signer) bool {
	for _, sig := range r.Signatures {
		if sig.Verified && sig.Signer != nil && *sig.Signer == s {
			return true
		}
	}
	return false
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// FullReferenceTags: src names tags by full reference, as kfm's cache
	// does (see SignOptions).
	FullReferenceTags bool
	// SkipContent skips re-reading the config and layers of the manifest
	// (the manifest itself is always read and checked against the digest).
	SkipContent bool
}

// Verify checks that the manifest desc in src, referred to as ref, carries a
// signature the policy accepts. ref may be a tag or digest reference; only its
// repository selects the policy rule, and what is verified is desc.Digest.
//
// Verify reads the manifest, its config and layers and checks them against
// their digests (ErrContent), then every signature of the digest: sigstore
// bundle referrers and the legacy tag. It returns the Result in every case;
// the error is nil only when a signature verified under the rule, else it
// wraps ErrUntrusted (no rule, a deny rule, or no accepted signer),
// ErrUnsigned or ErrInvalidSignature.
func Verify(ctx context.Context, src oras.ReadOnlyGraphTarget, ref string, desc ocispec.Descriptor, p *Policy, opts *VerifyOptions) (*Result, error) {
	if opts == nil {
		opts = &VerifyOptions{}
	}
	res := &Result{Reference: ref, Digest: desc.Digest, Signatures: []Signature{}}
	if err := checkSubject(desc); err != nil {
		return res, err
	}
	parsed, err := registry.ParseReference(ref)
	if err != nil {
		return res, fmt.Errorf("reference %q: %w", ref, err)
	}
	if d, err := parsed.Digest(); err == nil && d != desc.Digest {
		return res, fmt.Errorf("reference %s names digest %s, not the %s being verified", ref, d, desc.Digest)
	}
	if p == nil {
		return res, fmt.Errorf("%w: no trust policy", ErrUntrusted)
	}
	if err := checkContent(ctx, src, desc, !opts.SkipContent); err != nil {
		return res, err
	}
	tagRef, err := legacyTagRef(ref, desc.Digest, opts.FullReferenceTags)
	if err != nil {
		return res, err
	}
	cands, lookupErr, err := findSignatures(ctx, src, desc, tagRef)
	if err != nil {
		return res, err
	}
	rule, ruleErr := p.Match(ref)
	if rule != nil {
		res.Rule = rule.where(p.Source)
	}
	defer func() {
		for _, c := range cands {
			res.Signatures = append(res.Signatures, c.Signature)
		}
	}()
	unevaluated := func(why string) {
		for _, c := range cands {
			if c.Problem == "" {
				c.Problem = why
			}
		}
	}
	if ruleErr != nil {
		unevaluated("not checked: no rule of the policy matches the repository")
		return res, ruleErr
	}
	if rule.Deny {
		unevaluated("not checked: the repository is denied")
		return res, fmt.Errorf("%w: %s: refused by deny rule %s", ErrUntrusted, ref, res.Rule)
	}
	if len(cands) == 0 && lookupErr != nil {
		return res, fmt.Errorf("%s@%s: cannot tell whether it is signed: %w", parsed.Registry+"/"+parsed.Repository, desc.Digest, lookupErr)
	}
	if len(cands) == 0 {
		return res, fmt.Errorf("%w: %s@%s has no signature (no sigstore bundle among its referrers, no legacy tag %s): sign it with `kfm sign` or `cosign sign`",
			ErrUnsigned, parsed.Registry+"/"+parsed.Repository, desc.Digest, LegacyTag(desc.Digest))
	}
	for _, c := range cands {
		if c.broken {
			continue
		}
		evaluate(c, rule, desc.Digest)
		if c.Verified && res.Signer == nil {
			res.Signer = c.Signer
		}
	}
	if res.Signer != nil {
		return res, nil
	}
	var problems []string
	sentinel := ErrInvalidSignature
	for i, c := range cands {
		if c.untrusted {
			sentinel = ErrUntrusted
		}
		switch {
		case i < maxProblems:
			problems = append(problems, c.describe()+": "+c.Problem)
		case i == maxProblems:
			problems = append(problems, fmt.Sprintf("and %d more (see the result)", len(cands)-maxProblems))
		}
	}
	if lookupErr != nil {
		problems = append(problems, lookupErr.Error())
	}
	return res, fmt.Errorf("%w: %s@%s: no signature acceptable under rule %s: %s",
		sentinel, parsed.Registry+"/"+parsed.Repository, desc.Digest, res.Rule, strings.Join(problems, "; "))
}

// checkContent reads the manifest desc (and with deep its config and
// layers, streaming) and checks every byte against its digest.
func checkContent(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor, deep bool) error {
	data, err := fetchCapped(ctx, src, desc, maxManifestSize)
	if err != nil {
		return contentError(desc, err)
	}
	if !deep || desc.MediaType != ocispec.MediaTypeImageManifest {
		return nil
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%w: manifest %s: %w", ErrContent, desc.Digest, err)
	}
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if err := streamCheck(ctx, src, d); err != nil {
			return contentError(d, err)
		}
	}
	return nil
}

func contentError(d ocispec.Descriptor, err error) error {
	if errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s (%s): the store serves other bytes than were signed: %w", ErrContent, d.Digest, d.MediaType, err)
	}
	return fmt.Errorf("read %s (%s): %w", d.Digest, d.MediaType, err)
}

func streamCheck(ctx context.Context, src content.Fetcher, d ocispec.Descriptor) error {
	rc, err := src.Fetch(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	vr := content.NewVerifyReader(rc, d)
	if _, err := io.Copy(io.Discard, vr); err != nil {
		return err
	}
	return vr.Verify()
}

// evaluate verifies candidate c against rule, recording the outcome in c.
func evaluate(c *candidate, rule *Rule, d digest.Digest) {
	raw, _ := hex.DecodeString(d.Encoded())
	switch {
	case c.Format == FormatBundle:
		if other, ok := bundleNamesOther(c, d); !ok {
			c.fail(false, "it signs "+other+", not this manifest (a signature copied from other content)")
			return
		}
		c.verifyWith(rule, func() sgverify.ArtifactPolicyOption { return sgverify.WithArtifactDigest("sha256", raw) })
	default:
		var sci payload.SimpleContainerImage
		if err := json.Unmarshal(c.payload, &sci); err != nil {
			c.fail(false, "payload is not a simple-signing payload: "+err.Error())
			return
		}
		if got := sci.Critical.Image.DockerManifestDigest; got != d.String() {
			c.fail(false, "it signs "+got+", not this manifest (a signature copied from other content)")
			return
		}
		if sci.Critical.Type != payload.CosignSignatureType {
			c.fail(false, fmt.Sprintf("payload type %q is not %q", sci.Critical.Type, payload.CosignSignatureType))
			return
		}
		c.verifyWith(rule, func() sgverify.ArtifactPolicyOption { return sgverify.WithArtifact(bytes.NewReader(c.payload)) })
	}
}

// bundleNamesOther checks, before any cryptography, whether the bundle is
// about d at all; if not it returns what it names instead.
func bundleNamesOther(c *candidate, d digest.Digest) (string, bool) {
	if env, err := c.bundle.Envelope(); err == nil && env != nil {
		st, err := env.Statement()
		if err != nil {
			return "an unreadable statement", false
		}
		var names []string
		for _, s := range st.GetSubject() {
			for alg, v := range s.GetDigest() {
				if alg == string(d.Algorithm()) && v == d.Encoded() {
					return "", true
				}
				names = append(names, alg+":"+v)
			}
		}
		return strings.Join(names, ", "), false
	}
	if ms := c.bundle.GetMessageSignature(); ms != nil {
		got := hex.EncodeToString(ms.GetMessageDigest().GetDigest())
		return "sha256:" + got, got == d.Encoded()
	}
	return "nothing", false
}

// verifyWith runs sigstore-go's verifier for every way rule accepts the
// candidate's kind of material, stopping at the first success. artifact
// makes the artifact policy (fresh per attempt: it may hold a reader).
func (c *candidate) verifyWith(rule *Rule, artifact func() sgverify.ArtifactPolicyOption) {
	if c.Kind == KindKey {
		c.verifyKey(rule, artifact)
	} else {
		c.verifyCertificate(rule, artifact)
	}
}

func (c *candidate) entity(keyHash crypto.Hash) sgverify.SignedEntity {
	if c.bundle != nil {
		return c.bundle
	}
	return &legacyEntity{c: c, hash: keyHash}
}

func (c *candidate) verifyKey(rule *Rule, artifact func() sgverify.ArtifactPolicyOption) {
	if len(rule.Keys) == 0 {
		c.fail(true, "signed with a key, and the rule accepts only keyless identities")
		return
	}
	var errs []string
	for _, k := range rule.Keys {
		v, err := sgverify.NewVerifier(k.material(), sgverify.WithNoObserverTimestamps())
		if err != nil {
			c.fail(false, err.Error())
			return
		}
		_, err = v.Verify(c.entity(hashOf(k.key)), sgverify.NewPolicy(artifact(), sgverify.WithKey()))
		if err == nil {
			c.accept(&Signer{Key: k.Fingerprint})
			return
		}
		errs = append(errs, k.Ref+": "+err.Error())
	}
	// A bundle names its key by hint (base64 of the key's SHA-256): if it
	// names an accepted key that does not verify it, it was tampered with.
	if c.bundle != nil {
		hint := c.bundle.GetVerificationMaterial().GetPublicKey().GetHint()
		for _, k := range rule.Keys {
			if hint != "" && hint == keyHint(k.Fingerprint) {
				c.fail(false, "does not verify with the key it names ("+k.Ref+"): "+strings.Join(errs, "; "))
				return
			}
		}
	}
	c.fail(true, "no key of the rule verifies it (signed by another key?)")
}

func (c *candidate) verifyCertificate(rule *Rule, artifact func() sgverify.ArtifactPolicyOption) {
	kl := rule.Keyless
	who := "a certificate"
	if c.Claimed != nil {
		who = "a certificate for " + c.Claimed.String()
	}
	if kl == nil {
		c.fail(true, "signed with "+who+", and the rule accepts only keys")
		return
	}
	vopts := []sgverify.VerifierOption{sgverify.WithTransparencyLog(1), sgverify.WithObserverTimestamps(1)}
	if len(kl.TrustedRoot.CTLogs()) > 0 {
		vopts = append(vopts, sgverify.WithSignedCertificateTimestamps(1))
	}
	v, err := sgverify.NewVerifier(kl.TrustedRoot, vopts...)
	if err != nil {
		c.fail(false, err.Error())
		return
	}
	popts := []sgverify.PolicyOption{}
	for _, id := range kl.ids {
		popts = append(popts, sgverify.WithCertificateIdentity(id))
	}
	var cert *x509.Certificate
	if vc, err := c.entity(0).VerificationContent(); err == nil {
		cert = vc.Certificate()
	}
	if cert == nil {
		c.fail(false, "no certificate")
		return
	}
	res, err := v.Verify(c.entity(hashOf(cert.PublicKey)), sgverify.NewPolicy(artifact(), popts...))
	if err == nil {
		s := &Signer{}
		if res.Signature != nil && res.Signature.Certificate != nil {
			s.Subject = res.Signature.Certificate.SubjectAlternativeName
			s.Issuer = res.Signature.Certificate.Issuer
		}
		c.accept(s)
		return
	}
	var idErr *sgverify.ErrNoMatchingCertificateIdentity
	switch {
	case errors.As(err, &idErr):
		c.fail(true, who+": not an identity the rule accepts")
	case strings.Contains(err.Error(), "leaf certificate verification failed") && !chainsTo(cert, kl.TrustedRoot):
		c.fail(true, who+": not issued by a certificate authority of the trusted root "+kl.TrustedRootPath)
	case strings.Contains(err.Error(), "leaf certificate verification failed") || strings.Contains(err.Error(), "outside certificate validity"):
		c.fail(false, fmt.Sprintf("%s: the certificate (valid %s to %s) was not valid when the transparency log or a timestamp authority saw the signature: expired, and no valid timestamp (%v)",
			who, cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339), err))
	case strings.Contains(err.Error(), "log inclusion") || strings.Contains(err.Error(), "log entr"):
		c.fail(false, who+": no transparency-log entry of this signature that the trusted root can verify: "+err.Error())
	case strings.Contains(err.Error(), "timestamp"):
		c.fail(false, who+": no observer timestamp the trusted root can verify: "+err.Error())
	default:
		c.fail(false, who+": "+err.Error())
	}
}

// chainsTo reports whether cert chains to a certificate authority of tm at
// some time within its own validity: used only to explain a failure.
func chainsTo(cert *x509.Certificate, tm root.TrustedMaterial) bool {
	for _, ca := range tm.FulcioCertificateAuthorities() {
		for _, t := range []time.Time{cert.NotBefore, cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2), cert.NotAfter} {
			if _, err := ca.Verify(cert, t); err == nil {
				return true
			}
		}
	}
	return false
}

func (c *candidate) accept(s *Signer) {
	c.Verified, c.Signer, c.Problem, c.untrusted = true, s, "", false
}

// material is trusted material holding only k, whatever key ID is asked for
// (cosign's key hints are optional and not binding).
func (k *PublicKey) material() root.TrustedMaterial {
	ek := root.NewExpiringKey(k.verifier, time.Time{}, time.Time{})
	return root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return ek, nil })
}

// keyHint is cosign's hint of a key: base64 of the SHA-256 of its PKIX form.
func keyHint(fingerprint string) string {
	sum, err := hex.DecodeString(strings.TrimPrefix(fingerprint, "sha256:"))
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(sum)
}
