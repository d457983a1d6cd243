package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"

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
