// Package sigstoretest is a private sigstore for keyless tests: sigstore-go's
// VirtualSigstore (pkg/testing/ca) plays Fulcio (certificate authority),
// Rekor (transparency log) and a timestamp authority, all in-process. Its
// trusted root is written to a trusted_root.json file and read back exactly
// as a user's would be.
//
// It does not sign anything itself: tests sign with package verify (a key
// certified by Leaf, CertificateProvider and Rekor as sigstore-go signing
// options), so that the code under test builds the bundles.
package sigstoretest

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Sigstore is one private sigstore deployment.
type Sigstore struct {
	*ca.VirtualSigstore
}

// New makes a deployment (fresh CA, log and timestamp authority keys).
func New(tb testing.TB) *Sigstore {
	tb.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		tb.Fatal(err)
	}
	return &Sigstore{vs}
}

// rekorLogs returns the transparency logs with IDs as raw key IDs: the
// VirtualSigstore keeps them hex-encoded, which does not survive the JSON
// round trip (the trusted root stores the raw bytes).
func (s *Sigstore) rekorLogs(tb testing.TB) map[string]*root.TransparencyLog {
	out := map[string]*root.TransparencyLog{}
	for id, l := range s.RekorLogs() {
		raw, err := hex.DecodeString(string(l.ID))
		if err != nil {
			tb.Fatal(err)
		}
		cp := *l
		cp.ID = raw
		out[id] = &cp
	}
	return out
}

// WriteTrustedRoot writes a trusted_root.json made of caFrom's certificate
// authority and s's transparency log and timestamp authority (no CT logs, so
// no SCTs are required), and returns its path.
func (s *Sigstore) WriteTrustedRoot(tb testing.TB, caFrom *Sigstore) string {
	tb.Helper()
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, caFrom.FulcioCertificateAuthorities(), nil, s.TimestampingAuthorities(), s.rekorLogs(tb))
	if err != nil {
		tb.Fatal(err)
	}
	data, err := json.Marshal(tr)
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(tb.TempDir(), "trusted_root.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Leaf issues a ten-minute code-signing certificate for identity (an e-mail
// subject) from issuer, valid from now, and returns it with its key.
func (s *Sigstore) Leaf(tb testing.TB, identity, issuer string) (*x509.Certificate, signature.SignerVerifier) {
	tb.Helper()
	leaf, priv, err := s.GenerateLeafCert(identity, issuer)
	if err != nil {
		tb.Fatal(err)
	}
	sv, err := signature.LoadDefaultSignerVerifier(priv)
	if err != nil {
		tb.Fatal(err)
	}
	return leaf, sv
}

// CertificateProvider hands a certificate to sigstore-go's signer, as Fulcio
// would.
type CertificateProvider struct{ Cert *x509.Certificate }

// GetCertificate implements sign.CertificateProvider.
func (c CertificateProvider) GetCertificate(context.Context, sign.Keypair, *sign.CertificateProviderOptions) ([]byte, error) {
	return c.Cert.Raw, nil
}

// Rekor is a sign.Transparency that logs DSSE signatures in the deployment's
// log: an entry with inclusion proof and signed entry timestamp.
type Rekor struct {
	S    *Sigstore
	Leaf *x509.Certificate
	// Integrated is when the log claims to have seen the signature.
	Integrated time.Time
	// Substitute, when set, is logged instead of the bundle being signed
	// (a log entry for other content).
	Substitute *protobundle.Bundle
}

func envelopeOf(b *protobundle.Bundle) (*dsse.Envelope, []byte) {
	pe := b.GetDsseEnvelope()
	sig := pe.GetSignatures()[0].GetSig()
	return &dsse.Envelope{
		PayloadType: pe.GetPayloadType(),
		Payload:     base64.StdEncoding.EncodeToString(pe.GetPayload()),
		Signatures:  []dsse.Signature{{Sig: base64.StdEncoding.EncodeToString(sig)}},
	}, sig
}

// GetTransparencyLogEntry implements sign.Transparency.
func (r *Rekor) GetTransparencyLogEntry(_ context.Context, _ []byte, b *protobundle.Bundle) error {
	logged := b
	if r.Substitute != nil {
		logged = r.Substitute
	}
	env, sig := envelopeOf(logged)
	entry, err := r.S.GenerateTlogEntry(r.Leaf, env, sig, r.Integrated.Unix(), true)
	if err != nil {
		return err
	}
	tle := entry.TransparencyLogEntry()
	var kv struct{ Kind, APIVersion string }
	if err := json.Unmarshal(tle.GetCanonicalizedBody(), &kv); err != nil {
		return err
	}
	tle.KindVersion = &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion}
	set, err := r.S.RekorSignPayload(tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.GetCanonicalizedBody()),
		IntegratedTime: tle.GetIntegratedTime(),
		LogIndex:       tle.GetLogIndex(),
		LogID:          hex.EncodeToString(tle.GetLogId().GetKeyId()),
	})
	if err != nil {
		return err
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	b.VerificationMaterial.TlogEntries = append(b.VerificationMaterial.TlogEntries, tle)
	return nil
}

// AddTimestamp adds an RFC 3161 timestamp of the bundle's signature from the
// deployment's timestamp authority.
func (s *Sigstore) AddTimestamp(tb testing.TB, b *protobundle.Bundle) {
	tb.Helper()
	_, sig := envelopeOf(b)
	tsr, err := s.TimestampResponse(sig)
	if err != nil {
		tb.Fatal(err)
	}
	b.VerificationMaterial.TimestampVerificationData = &protobundle.TimestampVerificationData{
		Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: tsr}},
	}
}

// LegacyKeyless signs payload (a simple-signing payload) as cosign 2 did by
// default and returns the annotations of its layer: the signature, the
// certificate, and the log's signed entry timestamp (cosign's "bundle"
// annotation).
func (s *Sigstore) LegacyKeyless(tb testing.TB, payload []byte, identity, issuer string) map[string]string {
	tb.Helper()
	ent, err := s.SignAtTime(identity, issuer, payload, time.Now().Add(time.Minute))
	if err != nil {
		tb.Fatal(err)
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		tb.Fatal(err)
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		tb.Fatal(err)
	}
	entries, err := ent.TlogEntries()
	if err != nil {
		tb.Fatal(err)
	}
	tle := entries[0].TransparencyLogEntry()
	body := base64.StdEncoding.EncodeToString(tle.GetCanonicalizedBody())
	logID := hex.EncodeToString(tle.GetLogId().GetKeyId())
	set, err := s.RekorSignPayload(tlog.RekorPayload{Body: body, IntegratedTime: tle.GetIntegratedTime(), LogIndex: tle.GetLogIndex(), LogID: logID})
	if err != nil {
		tb.Fatal(err)
	}
	rb, err := json.Marshal(map[string]any{
		"SignedEntryTimestamp": set,
		"Payload":              map[string]any{"body": body, "integratedTime": tle.GetIntegratedTime(), "logIndex": tle.GetLogIndex(), "logID": logID},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]string{
		"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sc.Signature()),
		"dev.sigstore.cosign/certificate":    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vc.Certificate().Raw})),
		"dev.sigstore.cosign/bundle":         string(rb),
	}
}
