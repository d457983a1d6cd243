package verify

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"oras.land/oras-go/v2/content"

	"github.com/kfm-project/kfm/internal/sigstoretest"
)

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

// keylessBundle signs desc keylessly with package verify: a fresh key
// certified by the private sigstore for identity/issuer, the signature
// logged and timestamped there.
func keylessBundle(t testing.TB, vs *sigstoretest.Sigstore, desc ocispec.Descriptor, o keylessOpts) *protobundle.Bundle {
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
	leaf, sv := vs.Leaf(t, o.identity, o.issuer)
	sk, err := NewSigningKey(sv)
	if err != nil {
		t.Fatal(err)
	}
	opts := SignOptions{CertificateProvider: sigstoretest.CertificateProvider{Cert: leaf}}
	if !o.noTlog {
		rk := &sigstoretest.Rekor{S: vs, Leaf: leaf, Integrated: o.integrated}
		if o.otherTlog {
			if rk.Substitute, err = NewBundle(ctx, otherDescriptor(t), sk, SignOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		opts.TransparencyLogs = []sign.Transparency{rk}
	}
	b, err := NewBundle(ctx, desc, sk, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !o.noTSA {
		vs.AddTimestamp(t, b)
	}
	return b
}

// otherDescriptor describes some other manifest.
func otherDescriptor(t testing.TB) ocispec.Descriptor {
	t.Helper()
	data := make([]byte, 64)
	rand.Read(data)
	return content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, data)
}
