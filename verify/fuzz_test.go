package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"

	"github.com/kfm-project/kfm/internal/sigstoretest"
)

// FuzzSignatures feeds arbitrary signature material, as a hostile registry
// could serve it, through discovery and verification: a legacy signature
// layer (payload, base64 signature, certificate and transparency-log
// annotations) and a sigstore bundle referrer. Nothing may panic, and
// nothing may be accepted unless it really was signed by the trusted key
// (the seeds include genuine signatures, which must be accepted).
func FuzzSignatures(f *testing.F) {
	ctx := context.Background()
	key := newTestKey(f)
	vs := sigstoretest.New(f)
	tr := vs.WriteTrustedRoot(f, vs)
	policy := keylessPolicy(f, tr, releaseID)
	policy.Rules[0].Keys = []*PublicKey{key.pub}

	// The subject every input is about (fixed bytes: a fixed digest).
	subjectData, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{ocispec.DescriptorEmptyJSON}})
	subject := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, subjectData)
	const ref = "registry.example.com/net/fuzz:1"

	// Genuine seeds: a legacy signature and a bundle by the trusted key,
	// and a keyless legacy signature.
	pl, _ := LegacyPayload("registry.example.com/net/fuzz", subject.Digest, nil)
	sig, _, _ := key.priv.SignData(ctx, pl)
	b, _ := NewBundle(ctx, subject, key.priv, SignOptions{})
	bundleJSON, _ := protojson.Marshal(b)
	f.Add(pl, base64.StdEncoding.EncodeToString(sig), "", "", bundleJSON)
	f.Add(pl, "", "", "", []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	ann := vs.LegacyKeyless(f, pl, releaseID.Subject, releaseID.Issuer)
	f.Add(pl, ann[annotationSignature], ann[annotationCertificate], ann[annotationRekorBundle], []byte("{}"))
	f.Add([]byte(`{"critical":{"image":{"docker-manifest-digest":"`+subject.Digest.String()+`"},"type":"cosign container image signature"}}`), "AAAA", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", `{"Payload":{"logID":"zz"}}`, []byte("null"))

	f.Fuzz(func(t *testing.T, payload []byte, sigB64, certPEM, rekorBundle string, bundle []byte) {
		store := memory.New()
		push := func(mt string, data []byte) ocispec.Descriptor {
			d := content.NewDescriptorFromBytes(mt, data)
			if err := store.Push(ctx, d, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
				t.Fatal(err)
			}
			return d
		}
		push(ocispec.MediaTypeEmptyJSON, ocispec.DescriptorEmptyJSON.Data)
		push(ocispec.MediaTypeImageManifest, subjectData)

		layer := push(MediaTypeSimpleSigning, payload)
		layer.Annotations = map[string]string{annotationSignature: sigB64}
		if certPEM != "" {
			layer.Annotations[annotationCertificate] = certPEM
		}
		if rekorBundle != "" {
			layer.Annotations[annotationRekorBundle] = rekorBundle
		}
		legacy, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{layer}})
		if _, err := oras.TagBytes(ctx, store, ocispec.MediaTypeImageManifest, legacy, LegacyTag(subject.Digest)); err != nil {
			t.Fatal(err)
		}
		bl := push(MediaTypeBundle, bundle)
		referrer, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			ArtifactType: MediaTypeBundle, Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{bl}, Subject: &subject})
		push(ocispec.MediaTypeImageManifest, referrer)

		res, err := Verify(ctx, store, ref, subject, policy, nil)
		if err != nil {
			if !errors.Is(err, ErrUntrusted) && !errors.Is(err, ErrInvalidSignature) && !errors.Is(err, ErrUnsigned) {
				t.Fatalf("refusal %v wraps none of the sentinels", err)
			}
			if res.Signer != nil {
				t.Fatalf("refused with a signer: %+v", res)
			}
			return
		}
		switch s := res.Signer; {
		case s.Key == key.pub.Fingerprint:
		case s.Subject == releaseID.Subject && s.Issuer == releaseID.Issuer:
		default:
			t.Fatalf("accepted signer %v", s)
		}
	})
}

// FuzzParseKeys feeds arbitrary bytes to the two key parsers, as a user's
// key file or a policy's trusted key could hold them: ParsePublicKey and
// ParseSigningKey (without a password function: an encrypted key must be
// refused with ErrNoPassword, before any key derivation). Refusals wrap
// ErrKey (or ErrNoPassword); an accepted key re-encodes to a PEM public key
// that parses to the same fingerprint.
func FuzzParseKeys(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, priv := range []crypto.Signer{ec, ed, rsaKey} {
		pkcs8, _ := x509.MarshalPKCS8PrivateKey(priv)
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
		pub, _ := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
		f.Add(pub)
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}))
	kp, err := GenerateKeyPair(StaticPassword("pw"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kp.PrivatePEM)
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))

	refit := func(t *testing.T, what string, pub crypto.PublicKey, fp string) {
		pemData, err := cryptoutils.MarshalPublicKeyToPEM(pub)
		if err != nil {
			t.Fatalf("accepted %s has no PEM encoding: %v", what, err)
		}
		again, err := ParsePublicKey("again", pemData)
		if err != nil {
			t.Fatalf("accepted %s does not re-parse: %v\n%s", what, err, pemData)
		}
		if again.Fingerprint != fp {
			t.Fatalf("accepted %s: fingerprint %s, re-parsed %s", what, fp, again.Fingerprint)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if pub, err := ParsePublicKey("fuzz.pub", data); err != nil {
			if !errors.Is(err, ErrKey) {
				t.Fatalf("public key refusal wraps no ErrKey: %v", err)
			}
		} else {
			refit(t, "public key", pub.Key(), pub.Fingerprint)
		}
		if sk, err := ParseSigningKey("fuzz.key", data, nil); err != nil {
			if !errors.Is(err, ErrKey) && !errors.Is(err, ErrNoPassword) {
				t.Fatalf("private key refusal wraps neither ErrKey nor ErrNoPassword: %v", err)
			}
		} else {
			refit(t, "private key", sk.PublicKey(), sk.Fingerprint())
		}
	})
}

// FuzzParseRekorBundle: the transparency-log annotation of a legacy cosign
// signature (dev.sigstore.cosign/bundle) comes from the registry; any string
// is read or refused without a panic, and a read one yields an entry.
func FuzzParseRekorBundle(f *testing.F) {
	vs := sigstoretest.New(f)
	pl, _ := LegacyPayload("registry.example.com/net/fuzz", digest.FromString("x"), nil)
	ann := vs.LegacyKeyless(f, pl, releaseID.Subject, releaseID.Issuer)
	f.Add(ann[annotationRekorBundle])
	f.Add(`{"SignedEntryTimestamp":"","Payload":{"body":"e30=","integratedTime":1,"logIndex":-1,"logID":"00"}}`)
	f.Add(`{"Payload":{"body":"eyJraW5kIjoiaGFzaGVkcmVrb3JkIiwiYXBpVmVyc2lvbiI6IjAuMC4xIn0=","logID":"zz"}}`)
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseRekorBundle(s)
		if err == nil && e == nil {
			t.Fatal("no error and no entry")
		}
	})
}

// FuzzCopySignatures: kfm copy carries signatures from one registry to
// another, reading referrer manifests and the legacy .sig manifest from
// the source. Whatever those hold (the fuzzer's manifests, with "@S"/"@s"
// replaced by the subject's digest and size and "@B"/"@b" by a blob's, so
// that they can point at what exists), nothing panics, and every signature
// counted as copied is in the destination with its blobs.
func FuzzCopySignatures(f *testing.F) {
	ctx := context.Background()
	subjectData, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{ocispec.DescriptorEmptyJSON}})
	subject := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, subjectData)
	blob := []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`)
	referrer := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","digest":"@B","size":@b}],` +
		`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@S","size":@s}}`)
	legacy := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"@B","size":@b,"annotations":{"dev.cosignproject.cosign/signature":"AAAA"}}]}`)
	f.Add(referrer, legacy)
	f.Add(referrer, []byte(nil))
	f.Add(bytes.Replace(referrer, []byte(`"size":@b`), []byte(`"size":99999999999`), 1), []byte(`{"config":{"digest":"@B","size":@b},"layers":null}`))
	f.Add([]byte(`{"subject":{"digest":"@S","size":@s},"layers":[{"mediaType":"application/vnd.dev.sigstore.bundle","digest":"@B","size":-1}]}`), []byte("{"))
	const ref = "registry.example.com/net/fuzz:1"
	fill := func(b []byte) []byte {
		for _, r := range []struct{ from, to string }{
			{"@S", subject.Digest.String()}, {"@s", strconv.Itoa(len(subjectData))},
			{"@B", digest.FromBytes(blob).String()}, {"@b", strconv.Itoa(len(blob))},
		} {
			b = bytes.ReplaceAll(b, []byte(r.from), []byte(r.to))
		}
		return b
	}
	f.Fuzz(func(t *testing.T, ref1, sig []byte) {
		src, dst := memory.New(), memory.New()
		for _, b := range []struct {
			mt   string
			data []byte
		}{
			// (The memory store finds a blob by media type and digest.)
			{ocispec.MediaTypeEmptyJSON, ocispec.DescriptorEmptyJSON.Data},
			{MediaTypeBundle, blob}, {MediaTypeSimpleSigning, blob}, {"application/vnd.dev.sigstore.bundle", blob},
			{ocispec.MediaTypeImageManifest, subjectData}, {ocispec.MediaTypeImageManifest, fill(ref1)},
		} {
			d := content.NewDescriptorFromBytes(b.mt, b.data)
			if err := src.Push(ctx, d, bytes.NewReader(b.data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
				return // the store refuses it (a manifest it cannot index): nothing to copy from
			}
		}
		if sig != nil {
			if _, err := oras.TagBytes(ctx, src, ocispec.MediaTypeImageManifest, fill(sig), LegacyTag(subject.Digest)); err != nil {
				return
			}
		}
		n, err := CopySignatures(ctx, src, dst, ref, subject, CopyOptions{})
		if n < 0 || n > maxSignatures+1 {
			t.Fatalf("copied %d signatures", n)
		}
		if err != nil {
			return
		}
		// In the destination: the bundle referrers, and the legacy tag.
		refs, _ := registry.Referrers(ctx, dst, subject, "")
		copied := 0
		for _, r := range refs {
			if ok, err := holdsBundle(ctx, dst, r); err != nil || !ok {
				continue
			}
			copied++
			if err := checkContent(ctx, dst, r, true); err != nil {
				t.Fatalf("copied referrer %s is incomplete: %v", r.Digest, err)
			}
		}
		if _, rerr := dst.Resolve(ctx, LegacyTag(subject.Digest)); rerr == nil {
			copied++
		}
		if copied != n {
			t.Fatalf("counted %d copied signatures, the destination has %d", n, copied)
		}
	})
}
