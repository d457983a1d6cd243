package testregistry_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"net/netip"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/kfm-project/kfm/internal/testregistry"
)

// repo returns an oras-go repository on r with r's credentials. For the
// token variant the realm is on "localhost" while the registry is
// 127.0.0.1, which oras-go blocks by default: allowRealm lifts that.
func repo(t *testing.T, r *testregistry.Registry, allowLoopbackRealm bool) *remote.Repository {
	t.Helper()
	rp, err := remote.NewRepository(r.Host() + "/smoke/blob")
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.TLS() {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.CAPool()}
	}
	ac := &auth.Client{Client: &http.Client{Transport: tr}, Cache: auth.NewCache()}
	if r.Username() != "" {
		ac.Credential = auth.StaticCredential(r.Host(), auth.Credential{Username: r.Username(), Password: r.Password()})
	}
	if allowLoopbackRealm {
		ac.BlockedRealmPrefixes = []netip.Prefix{}
	}
	rp.Client = ac
	rp.PlainHTTP = !r.TLS()
	return rp
}

func TestSmokePushPullBlob(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts testregistry.Options
	}{
		{"plain", testregistry.Options{}},
		{"basic", testregistry.Options{Auth: testregistry.AuthBasic}},
		{"tls", testregistry.Options{TLS: true}},
		{"tls+basic", testregistry.Options{TLS: true, Auth: testregistry.AuthBasic}},
		{"token", testregistry.Options{Auth: testregistry.AuthToken}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			r := testregistry.Start(t, tc.opts)
			rp := repo(t, r, tc.opts.Auth == testregistry.AuthToken)
			data := []byte("kfm smoke test " + tc.name)
			desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageLayer, data)
			if err := rp.Push(ctx, desc, bytes.NewReader(data)); err != nil {
				t.Fatalf("push: %v", err)
			}
			got, err := content.FetchAll(ctx, rp, desc)
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("fetched %q, pushed %q", got, data)
			}
			// The blob is a file in the registry's storage.
			onDisk, err := os.ReadFile(r.BlobPath(desc.Digest))
			if err != nil || !bytes.Equal(onDisk, data) {
				t.Fatalf("BlobPath %s: %q, %v", r.BlobPath(desc.Digest), onDisk, err)
			}
		})
	}
}

func TestAuthRefusesStrangers(t *testing.T) {
	for _, a := range []testregistry.Auth{testregistry.AuthBasic, testregistry.AuthToken} {
		t.Run(a.String(), func(t *testing.T) {
			r := testregistry.Start(t, testregistry.Options{Auth: a})
			rp, _ := remote.NewRepository(r.Host() + "/smoke/blob")
			rp.PlainHTTP = true
			ac := &auth.Client{Credential: auth.StaticCredential(r.Host(), auth.Credential{Username: r.Username(), Password: "wrong"})}
			ac.BlockedRealmPrefixes = []netip.Prefix{}
			rp.Client = ac
			data := []byte("x")
			desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageLayer, data)
			if err := rp.Push(context.Background(), desc, bytes.NewReader(data)); err == nil {
				t.Fatal("push with a wrong password succeeded")
			}
		})
	}
}

// oras-go refuses a token realm on a loopback host other than the
// registry's unless told otherwise: the token variant really exercises that.
func TestTokenRealmIsBlockedByDefault(t *testing.T) {
	r := testregistry.Start(t, testregistry.Options{Auth: testregistry.AuthToken})
	rp := repo(t, r, false)
	_, err := rp.Exists(context.Background(), ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("x"), Size: 1})
	if err == nil {
		t.Fatal("oras-go with default realm checks accepted a loopback realm on another host")
	}
	t.Logf("default oras-go: %v", err)
}

func TestStopRefusesConnections(t *testing.T) {
	r := testregistry.Start(t, testregistry.Options{})
	r.Stop()
	resp, err := http.Get(r.URL() + "/v2/")
	if err == nil {
		resp.Body.Close()
		t.Fatal("registry still answers after Stop")
	}
	r.Stop() // idempotent
}
