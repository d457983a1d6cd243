package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/bpf"
)

// kindSource serves the fuzzer's bytes by what load asks for: the root
// manifest or index, then the manifest an index points at, the config, the
// object layer and the readme. It stands in for the registry (a real one
// over HTTP would cut the executions a hundredfold; pull_test.go covers
// that path): a hostile registry controls manifests and blobs alike, so
// serving any bytes under any digest loses nothing of what load must
// withstand. Like remoteSource it refuses what exceeds max.
type kindSource struct {
	root                        digest.Digest
	rootData, child, cfg, layer []byte
	readme                      []byte
}

func (s *kindSource) fetch(_ context.Context, desc ocispec.Descriptor, max int64, kind string) ([]byte, error) {
	var data []byte
	switch {
	case desc.Digest == s.root:
		data = s.rootData
	case kind == "manifest":
		data = s.child
	case kind == "config":
		data = s.cfg
	case kind == "layer":
		data = s.layer
	case kind == "readme":
		data = s.readme
	default:
		return nil, fmt.Errorf("%s %s: %w", kind, desc.Digest, ErrNotFound)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s %s: %w: %d bytes, kfm accepts at most %d", kind, desc.Digest, ErrTooLarge, len(data), max)
	}
	return data, nil
}

// FuzzLoad feeds hostile manifests, indexes, configs, layers and readmes
// through load, the reader of every pulled bundle (kfm and bpfman
// formats, indexes with platforms, a readme layer). Nothing may panic;
// refusals wrap ErrNotBundle, ErrInvalidBundle or ErrTooLarge; an accepted
// bundle has an object that parses and a config that re-validates.
func FuzzLoad(f *testing.F) {
	obj, err := os.ReadFile("../bpf/testdata/params.o")
	if err != nil {
		f.Fatal(err)
	}
	b, err := Pack(obj, PackOptions{Name: "seed", BundleFile: &BundleFile{ReadmeData: []byte("# seed\n")}})
	if err != nil {
		f.Fatal(err)
	}
	md := b.Descriptor()
	index, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{
			{MediaType: ocispec.MediaTypeImageManifest, Digest: md.Digest, Size: md.Size, Platform: &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}},
			{MediaType: ocispec.MediaTypeImageManifest, Digest: md.Digest, Size: md.Size, Platform: &ocispec.Platform{OS: "linux", Architecture: "s390x"}},
		}})
	f.Add(false, b.ManifestJSON(), []byte(nil), b.ConfigJSON(), obj, []byte(b.Readme))
	f.Add(true, index, b.ManifestJSON(), b.ConfigJSON(), obj, []byte("\xff"))
	f.Add(false, []byte(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:`+fmt.Sprintf("%064x", 0)+`","size":2},"layers":[]}`),
		[]byte(nil), []byte(`{"config":{"Labels":{"io.ebpf.programs":"{\"f\":\"xdp\"}","io.ebpf.filename":"x.o"}}}`), []byte("not a tar"), []byte(nil))

	c, err := NewClient(Options{Credentials: credentials.NewMemoryStore()})
	if err != nil {
		f.Fatal(err)
	}
	ref := Reference{Registry: "registry.example.com", Repository: "net/fuzz", Tag: "1"}
	f.Fuzz(func(t *testing.T, isIndex bool, root, child, cfg, layer, readme []byte) {
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(root), Size: int64(len(root))}
		if isIndex {
			desc.MediaType = ocispec.MediaTypeImageIndex
		}
		src := &kindSource{root: desc.Digest, rootData: root, child: child, cfg: cfg, layer: layer, readme: readme}
		got, blobs, err := c.load(context.Background(), src, ref, desc)
		if err != nil {
			if !errors.Is(err, ErrNotBundle) && !errors.Is(err, ErrInvalidBundle) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("refusal wraps no sentinel: %v", err)
			}
			return
		}
		if len(blobs) == 0 || blobs[len(blobs)-1].desc.Digest != desc.Digest {
			t.Fatalf("blobs do not end with the root manifest: %v", blobs)
		}
		if _, err := bpf.ParseObject("again", got.Object); err != nil {
			t.Fatalf("accepted an object that does not parse: %v", err)
		}
		cfgJSON, err := json.Marshal(got.Config)
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		if _, err := ParseConfig(cfgJSON); err != nil {
			t.Fatalf("accepted config does not re-validate: %v\n%s", err, cfgJSON)
		}
	})
}
