package verify

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/signature"
	"oras.land/oras-go/v2/content"
)

// A private sigstore for keyless tests: sigstore-go's VirtualSigstore plays
// Fulcio (certificate authority), Rekor (transparency log) and a timestamp
// authority, all in-process; its trusted root is written to a JSON file and
// read back exactly as a user's trusted_root.json would be.
type virtualSigstore struct {
	*ca.VirtualSigstore
}

func newVirtualSigstore(t testing.TB) *virtualSigstore {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	return &virtualSigstore{vs}
}

// rekorLogs returns the transparency logs with IDs as raw key IDs: the
// VirtualSigstore keeps them hex-encoded, which does not survive the JSON
// round trip (the trusted root stores the raw bytes).
func (v *virtualSigstore) rekorLogs(t testing.TB) map[string]*root.TransparencyLog {
	out := map[string]*root.TransparencyLog{}
	for id, l := range v.RekorLogs() {
		raw, err := hex.DecodeString(string(l.ID))
		if err != nil {
			t.Fatal(err)
		}
		cp := *l
		cp.ID = raw
		out[id] = &cp
	}
	return out
}

// writeTrustedRoot writes a trusted_root.json made of cas' certificate
// authority and v's transparency log and timestamp authority (no CT logs, so
// no SCTs are required).
func (v *virtualSigstore) writeTrustedRoot(t testing.TB, cas *virtualSigstore) string {
	t.Helper()
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas.FulcioCertificateAuthorities(), nil, v.TimestampingAuthorities(), v.rekorLogs(t))
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// keylessOpts shape a keyless signature, mostly to break it.
type keylessOpts struct {
	identity, issuer string
	// integrated is when the log says it saw the signature (default: one
	// minute from now, inside the certificate's ten minutes).
	integrated time.Time
	noTlog     bool // no transparency-log entry at all
	otherTlog  bool // a log entry of another signature
	noTSA      bool // no RFC 3161 timestamp
}

// certProvider hands out a certificate the VirtualSigstore issued.
type certProvider struct{ der []byte }

func (c certProvider) GetCertificate(context.Context, sign.Keypair, *sign.CertificateProviderOptions) ([]byte, error) {
	return c.der, nil
}

// virtualRekor is a sign.Transparency that logs DSSE signatures in the
// VirtualSigstore's log: an entry with inclusion proof and signed entry
// timestamp.
type virtualRekor struct {
	vs         *virtualSigstore
	leaf       *x509.Certificate
	integrated time.Time
	// substitute, when set, is logged instead of the real envelope.
	substitute *dsse.Envelope
}

func (r *virtualRekor) GetTransparencyLogEntry(_ context.Context, _ []byte, b *protobundle.Bundle) error {
	pe := b.GetDsseEnvelope()
	env := &dsse.Envelope{
		PayloadType: pe.GetPayloadType(),
		Payload:     base64.StdEncoding.EncodeToString(pe.GetPayload()),
		Signatures:  []dsse.Signature{{Sig: base64.StdEncoding.EncodeToString(pe.GetSignatures()[0].GetSig())}},
	}
	if r.substitute != nil {
		env = r.substitute
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		return err
	}
	entry, err := r.vs.GenerateTlogEntry(r.leaf, env, sig, r.integrated.Unix(), true)
	if err != nil {
		return err
	}
	tle := entry.TransparencyLogEntry()
	var kv struct{ Kind, APIVersion string }
	if err := json.Unmarshal(tle.GetCanonicalizedBody(), &kv); err != nil {
		return err
	}
	tle.KindVersion = &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion}
	set, err := r.vs.RekorSignPayload(tlog.RekorPayload{
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

// keylessBundle signs desc keylessly: a fresh key certified by the
// VirtualSigstore for identity/issuer, the signature logged and timestamped.
func (v *virtualSigstore) keylessBundle(t testing.TB, desc ocispec.Descriptor, o keylessOpts) *protobundle.Bundle {
	t.Helper()
	ctx := context.Background()
	if o.identity == "" {
		o.identity = "release@example.com"
	}
	if o.issuer == "" {
		o.issuer = "https://issuer.example.com"
	}
	if o.integrated.IsZero() {
		o.integrated = time.Now().Add(time.Minute)
	}
	leaf, priv, err := v.GenerateLeafCert(o.identity, o.issuer)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadDefaultSignerVerifier(priv)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := NewSigningKey(sv)
	if err != nil {
		t.Fatal(err)
	}
	opts := SignOptions{CertificateProvider: certProvider{leaf.Raw}}
	if !o.noTlog {
		rk := &virtualRekor{vs: v, leaf: leaf, integrated: o.integrated}
		if o.otherTlog {
			other, err := NewBundle(ctx, otherDescriptor(t), sk, SignOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pe := other.GetDsseEnvelope()
			rk.substitute = &dsse.Envelope{
				PayloadType: pe.GetPayloadType(),
				Payload:     base64.StdEncoding.EncodeToString(pe.GetPayload()),
				Signatures:  []dsse.Signature{{Sig: base64.StdEncoding.EncodeToString(pe.GetSignatures()[0].GetSig())}},
			}
		}
		opts.TransparencyLogs = []sign.Transparency{rk}
	}
	b, err := NewBundle(ctx, desc, sk, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !o.noTSA {
		tsr, err := v.TimestampResponse(b.GetDsseEnvelope().GetSignatures()[0].GetSig())
		if err != nil {
			t.Fatal(err)
		}
		b.VerificationMaterial.TimestampVerificationData = &protobundle.TimestampVerificationData{
			Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: tsr}},
		}
	}
	return b
}

// legacyKeyless signs the simple-signing payload of desc keylessly, as
// cosign 2 did by default: the certificate and the log's signed entry
// timestamp travel in layer annotations.
func (v *virtualSigstore) legacyKeyless(t testing.TB, repo string, desc ocispec.Descriptor, identity, issuer string) (payload []byte, annotations map[string]string) {
	t.Helper()
	pl, err := LegacyPayload(repo, desc.Digest, nil)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := v.SignAtTime(identity, issuer, pl, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ent.TlogEntries()
	if err != nil {
		t.Fatal(err)
	}
	tle := entries[0].TransparencyLogEntry()
	body := base64.StdEncoding.EncodeToString(tle.GetCanonicalizedBody())
	logID := hex.EncodeToString(tle.GetLogId().GetKeyId())
	set, err := v.RekorSignPayload(tlog.RekorPayload{Body: body, IntegratedTime: tle.GetIntegratedTime(), LogIndex: tle.GetLogIndex(), LogID: logID})
	if err != nil {
		t.Fatal(err)
	}
	rb := map[string]any{
		"SignedEntryTimestamp": set,
		"Payload":              map[string]any{"body": body, "integratedTime": tle.GetIntegratedTime(), "logIndex": tle.GetLogIndex(), "logID": logID},
	}
	rbJSON, err := json.Marshal(rb)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vc.Certificate().Raw})
	return pl, map[string]string{
		annotationSignature:   base64.StdEncoding.EncodeToString(sc.Signature()),
		annotationCertificate: string(certPEM),
		annotationRekorBundle: string(rbJSON),
	}
}

// otherDescriptor describes some other manifest.
func otherDescriptor(t testing.TB) ocispec.Descriptor {
	t.Helper()
	data := make([]byte, 64)
	rand.Read(data)
	return content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, data)
}
