package verify

import (
	"context"
	"errors"
	"testing"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/kfm-project/kfm/internal/faultproxy"
	"github.com/kfm-project/kfm/internal/testregistry"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	key := newTestKey(t)
	for _, format := range []Format{FormatBundle, FormatLegacy} {
		t.Run(string(format), func(t *testing.T) {
			repo, ref := testRepo(t, reg, "net/roundtrip-"+string(format))
			desc := pushArtifact(t, repo, "1.0.0", nil)
			if _, err := Verify(ctx, repo, ref+":1.0.0", desc, keyPolicy(key.pub), nil); !errors.Is(err, ErrUnsigned) {
				t.Fatalf("unsigned: got %v, want ErrUnsigned", err)
			}
			signed, err := Sign(ctx, repo, ref+":1.0.0", desc, key.priv, SignOptions{Format: format, Annotations: map[string]string{"team": "net"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("signed: %+v", signed)
			res, err := Verify(ctx, repo, ref+":1.0.0", desc, keyPolicy(key.pub), nil)
			if err != nil {
				t.Fatalf("verify: %v (%+v)", err, res)
			}
			if res.Signer == nil || res.Signer.Key != key.pub.Fingerprint {
				t.Fatalf("signer %v, want key %s", res.Signer, key.pub.Fingerprint)
			}
			if len(res.Signatures) != 1 || !res.Signatures[0].Verified || res.Signatures[0].Format != format {
				t.Fatalf("signatures: %+v", res.Signatures)
			}
		})
	}
}

// TestSignAnswerLost: a signature upload whose answer the client never gets
// (the registry stored the blob; faultproxy hangs up without answering)
// still signs: Sign asks the registry whether it holds the blob.
func TestSignAnswerLost(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	p := faultproxy.Start(t, reg.Host(), faultproxy.Options{})
	key := newTestKey(t)
	for _, format := range []Format{FormatBundle, FormatLegacy} {
		t.Run(string(format), func(t *testing.T) {
			name := "net/answer-lost-" + string(format)
			direct, _ := testRepo(t, reg, name)
			desc := pushArtifact(t, direct, "1.0.0", nil)
			p.Clear()
			p.Add(faultproxy.Rule{Method: "PUT", Path: `^/v2/.+/blobs/uploads/`, Times: 1, Fault: faultproxy.LoseResponse()})
			repo, err := remote.NewRepository(p.Host() + "/" + name)
			if err != nil {
				t.Fatal(err)
			}
			repo.PlainHTTP = true
			ref := p.Host() + "/" + name
			if _, err := Sign(ctx, repo, ref+":1.0.0", desc, key.priv, SignOptions{Format: format}); err != nil {
				t.Fatalf("sign with the first upload's answer lost: %v", err)
			}
			if n := len(p.Requests()); n == 0 {
				t.Fatal("nothing went through the proxy")
			}
			if _, err := Verify(ctx, repo, ref+":1.0.0", desc, keyPolicy(key.pub), nil); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}
