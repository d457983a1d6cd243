package verify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/kfm-project/kfm/internal/testregistry"
)

// Media types of a kfm bundle (DESIGN.md "Bundle format"); the tests build
// kfm-style artifacts without importing the registry package.
const (
	testArtifactType = "application/vnd.kfm.bundle.v1"
	testConfigType   = "application/vnd.kfm.bundle.config.v1+json"
	testLayerType    = "application/vnd.kfm.bpf.object.v1+elf"
)

// tamper overwrites the stored bytes of blob d on the registry's disk with
// as many other bytes, as an attacker with access to its storage would.
func tamper(t testing.TB, reg *testregistry.Registry, d digest.Digest) {
	t.Helper()
	p := reg.BlobPath(d)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("tamper %s: %v", d, err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// testRepo returns a repository on reg and its reference prefix.
func testRepo(t testing.TB, reg *testregistry.Registry, name string) (*remote.Repository, string) {
	t.Helper()
	ref := reg.Host() + "/" + name
	repo, err := remote.NewRepository(ref)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	return repo, ref
}

// pushArtifact pushes a kfm-style bundle holding obj (random bytes when
// nil) and tags it.
func pushArtifact(t testing.TB, dst oras.Target, tag string, obj []byte) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	if obj == nil {
		obj = make([]byte, 4096)
		rand.Read(obj)
	}
	// The config names the object, so that artifacts share no blob (a test
	// tampering with one blob on the registry's disk touches one artifact).
	sum := sha256.Sum256(obj)
	cfg, err := oras.PushBytes(ctx, dst, testConfigType, []byte(`{"name":"test","object":"`+hex.EncodeToString(sum[:])+`","programs":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := oras.PushBytes(ctx, dst, testLayerType, obj)
	if err != nil {
		t.Fatal(err)
	}
	m, err := oras.PackManifest(ctx, dst, oras.PackManifestVersion1_1, testArtifactType, oras.PackManifestOptions{
		ConfigDescriptor:    &cfg,
		Layers:              []ocispec.Descriptor{layer},
		ManifestAnnotations: map[string]string{ocispec.AnnotationCreated: "1970-01-01T00:00:00Z"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if tag != "" {
		if err := dst.Tag(ctx, m, tag); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// testKey is a cosign-format key pair on disk and loaded.
type testKey struct {
	priv     *SigningKey
	pub      *PublicKey
	keyPath  string
	pubPath  string
	password string
}

func newTestKey(t testing.TB) *testKey {
	t.Helper()
	dir := t.TempDir()
	const pw = "correct horse"
	if _, err := WriteKeyPair(filepath.Join(dir, "cosign"), StaticPassword(pw)); err != nil {
		t.Fatal(err)
	}
	k := &testKey{keyPath: filepath.Join(dir, "cosign.key"), pubPath: filepath.Join(dir, "cosign.pub"), password: pw}
	var err error
	if k.priv, err = LoadSigningKey(context.Background(), k.keyPath, StaticPassword(pw)); err != nil {
		t.Fatal(err)
	}
	if k.pub, err = LoadPublicKey(context.Background(), k.pubPath); err != nil {
		t.Fatal(err)
	}
	return k
}

// keyPolicy accepts keys for every repository.
func keyPolicy(keys ...*PublicKey) *Policy {
	return &Policy{Source: "test policy", Rules: []Rule{{Match: "**", Keys: keys}}}
}

func writeFile(t testing.TB, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
