package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// hostileRegistry answers the requests of FetchReferrers with the
// fuzzer's bytes: the referrers index, one manifest, one blob and the
// legacy .sig manifest (and the empty JSON blob). A fuzzer cannot guess digests, so the server puts
// them in for placeholders: "@M"/"@m" in the referrers body become the
// manifest's digest/size, "@B"/"@b" in the manifests the blob's. (A plain
// HTTP server rather than the testregistry: the point is bytes no real
// registry would serve.)
type hostileRegistry struct {
	subject                           digest.Digest
	referrers, manifest, blob, sigMan []byte
	// readme is a second blob, "@R"/"@r" (FuzzFetchMetadata).
	readme []byte
}

func (h *hostileRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/v2/net/fuzz/")
	serve := func(mt string, data []byte) {
		w.Header().Set("Content-Type", mt)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(data).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method != http.MethodHead {
			w.Write(data)
		}
	}
	switch {
	case r.URL.Path == "/v2/":
		w.WriteHeader(http.StatusOK)
	case p == "referrers/"+h.subject.String():
		serve(ocispec.MediaTypeImageIndex, h.referrers)
	case p == "manifests/"+strings.Replace(h.subject.String(), ":", "-", 1)+".sig" && len(h.sigMan) > 0:
		serve(ocispec.MediaTypeImageManifest, h.sigMan)
	case p == "manifests/"+digest.FromBytes(h.manifest).String(), p == "manifests/1":
		serve(ocispec.MediaTypeImageManifest, h.manifest)
	case p == "manifests/"+digest.FromBytes(h.sigMan).String():
		serve(ocispec.MediaTypeImageManifest, h.sigMan)
	case p == "blobs/"+digest.FromBytes(h.blob).String():
		serve("application/octet-stream", h.blob)
	case p == "blobs/"+digest.FromBytes(h.readme).String():
		serve("text/markdown", h.readme)
	case p == "blobs/"+ocispec.DescriptorEmptyJSON.Digest.String():
		serve("application/octet-stream", ocispec.DescriptorEmptyJSON.Data)
	default:
		http.Error(w, `{"errors":[{"code":"NOT_FOUND"}]}`, http.StatusNotFound)
	}
}

// FuzzFetchReferrers: the referrers response and the signature manifests
// and blobs it leads to come from the registry. Whatever it serves,
// FetchReferrers copies into the cache only what it returns, fails with an
// error naming the reference otherwise, and never panics.
func FuzzFetchReferrers(f *testing.F) {
	ctx := context.Background()
	subjectData := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(subjectData), Size: int64(len(subjectData))}
	blob := []byte(`{"payload":"signature"}`)
	manifest, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.dev.sigstore.bundle.v0.3+json", Config: ocispec.DescriptorEmptyJSON,
		Layers: []ocispec.Descriptor{{MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json", Digest: "@B", Size: -1}}, Subject: &subject})
	manifest = bytes.ReplaceAll(manifest, []byte(`"size":-1`), []byte(`"size":@b`))
	referrers := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@M","size":@m}]}`)
	f.Add(referrers, manifest, blob, manifest)
	f.Add(referrers, manifest, blob, []byte(nil))
	f.Add([]byte(`{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"@M","size":@m},{"digest":"sha256:0","size":-5}]}`), manifest, blob, []byte(`{"layers":[{"digest":"@B","size":99999999999}]}`))
	f.Add([]byte(`{"manifests":null}`), []byte("{"), []byte(nil), []byte(`{"config":{"mediaType":"x","digest":"@B","size":@b}}`))

	c, err := cache.Open(ctx, filepath.Join(f.TempDir(), "oci"))
	if err != nil {
		f.Fatal(err)
	}
	if err := c.Push(ctx, subject, bytes.NewReader(subjectData)); err != nil {
		f.Fatal(err)
	}
	h := &hostileRegistry{subject: subject.Digest}
	srv := httptest.NewServer(h)
	f.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	cl, err := registry.NewClient(registry.Options{Cache: c, Credentials: credentials.NewMemoryStore(), PlainHTTP: true})
	if err != nil {
		f.Fatal(err)
	}
	ref := registry.Reference{Registry: u.Host, Repository: "net/fuzz", Digest: subject.Digest}
	fill := func(b []byte, d, s string, data []byte) []byte {
		b = bytes.ReplaceAll(b, []byte(d), []byte(digest.FromBytes(data).String()))
		return bytes.ReplaceAll(b, []byte(s), []byte(strconv.Itoa(len(data))))
	}
	f.Fuzz(func(t *testing.T, refs, man, blob, sig []byte) {
		h.blob = blob
		h.manifest = fill(man, "@B", "@b", blob)
		h.sigMan = fill(sig, "@B", "@b", blob)
		h.referrers = fill(refs, "@M", "@m", h.manifest)
		copied, err := cl.FetchReferrers(ctx, ref)
		if err != nil && !strings.Contains(err.Error(), ref.Repo()) {
			t.Fatalf("error does not name the repository: %v", err)
		}
		for _, d := range copied {
			if ok, err := c.Exists(ctx, d); !ok || err != nil {
				t.Fatalf("returned %s, which is not in the cache (%v)", d.Digest, err)
			}
		}
	})
}

// FuzzFetchMetadata: the manifest, config and readme that kfm show, search
// and the catalog read without pulling (FetchMetadata), and the manifest and
// layer of a lock artifact that agents follow (FetchLock), as a hostile
// registry serves them under tag "1". Nothing panics; refusals wrap a
// registry sentinel; an accepted config re-validates, and an accepted lock
// is the bytes of the layer the manifest names.
func FuzzFetchMetadata(f *testing.F) {
	ctx := context.Background()
	b, err := registry.Pack(readObject(f), registry.PackOptions{Name: "seed"})
	if err != nil {
		f.Fatal(err)
	}
	withReadme := bytes.Replace(b.ManifestJSON(), []byte(`"layers":[`), []byte(`"layers":[{"mediaType":"text/markdown","digest":"@R","size":@r},`), 1)
	withReadme = bytes.Replace(withReadme, []byte(b.Manifest.Config.Digest.String()), []byte("@B"), 1)
	withReadme = bytes.Replace(withReadme, []byte(`"size":`+strconv.Itoa(int(b.Manifest.Config.Size))), []byte(`"size":@b`), 1)
	f.Add(withReadme, b.ConfigJSON(), []byte("# seed\n"))
	lock, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: registry.LockArtifactType, Config: ocispec.DescriptorEmptyJSON,
		Layers: []ocispec.Descriptor{{MediaType: registry.LockMediaType, Digest: "@B", Size: -1}}})
	lock = bytes.ReplaceAll(lock, []byte(`"size":-1`), []byte(`"size":@b`))
	f.Add(lock, []byte("version: 1\nchains: []\n"), []byte(nil))
	f.Add([]byte(`{"artifactType":"application/vnd.kfm.lock.v1","layers":[{"mediaType":"application/vnd.kfm.lock.v1+yaml","digest":"md5:00","size":1}]}`), []byte(nil), []byte(nil))

	c, err := cache.Open(ctx, filepath.Join(f.TempDir(), "oci"))
	if err != nil {
		f.Fatal(err)
	}
	h := &hostileRegistry{}
	srv := httptest.NewServer(h)
	f.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	cl, err := registry.NewClient(registry.Options{Cache: c, Credentials: credentials.NewMemoryStore(), PlainHTTP: true})
	if err != nil {
		f.Fatal(err)
	}
	ref := registry.Reference{Registry: u.Host, Repository: "net/fuzz", Tag: "1"}
	sentinel := func(err error) bool {
		for _, s := range []error{registry.ErrNotBundle, registry.ErrInvalidBundle, registry.ErrTooLarge, registry.ErrDigestMismatch, registry.ErrNotFound} {
			if errors.Is(err, s) {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, man, blob, readme []byte) {
		h.blob, h.readme = blob, readme
		man = bytes.ReplaceAll(man, []byte("@R"), []byte(digest.FromBytes(readme).String()))
		man = bytes.ReplaceAll(man, []byte("@r"), []byte(strconv.Itoa(len(readme))))
		h.manifest = bytes.ReplaceAll(bytes.ReplaceAll(man, []byte("@B"), []byte(digest.FromBytes(blob).String())), []byte("@b"), []byte(strconv.Itoa(len(blob))))

		md, err := cl.FetchMetadata(ctx, ref, true)
		if err != nil {
			if !sentinel(err) {
				t.Fatalf("FetchMetadata refusal wraps no sentinel: %v", err)
			}
		} else {
			out, err := json.Marshal(md.Config)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := registry.ParseConfig(out); err != nil {
				t.Fatalf("accepted config does not re-validate: %v", err)
			}
		}

		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(h.manifest), Size: int64(len(h.manifest))}
		data, err := cl.FetchLock(ctx, ref, desc)
		if err != nil {
			if !sentinel(err) {
				t.Fatalf("FetchLock refusal wraps no sentinel: %v", err)
			}
			return
		}
		var m ocispec.Manifest
		if json.Unmarshal(h.manifest, &m) != nil || len(m.Layers) != 1 || digest.FromBytes(data) != m.Layers[0].Digest {
			t.Fatalf("accepted lock %q is not the layer the manifest names", data)
		}
	})
}
