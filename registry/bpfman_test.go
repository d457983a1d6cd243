package registry_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/bpfman"
)

// tarGz builds a layer: one regular file per name, or whatever write does.
func tarGz(t testing.TB, write func(tw *tar.Writer)) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	write(tw)
	_ = tw.Close()
	_ = zw.Close()
	return buf.Bytes()
}

func file(name string, data []byte) func(tw *tar.Writer) {
	return func(tw *tar.Writer) {
		_ = tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
		_, _ = tw.Write(data)
	}
}

// pushBpfmanImage pushes a bytecode image as bpfman's Containerfile and
// `docker build` would make it: an OCI image config with the io.ebpf labels
// and one tar+gzip layer.
func pushBpfmanImage(t testing.TB, r *testregistry.Registry, repo, tag string, labels map[string]string, layer []byte) ocispec.Descriptor {
	t.Helper()
	cfg, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Labels": labels},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{}},
	})
	cfgDesc := pushBlob(t, r, repo, ocispec.MediaTypeImageConfig, cfg)
	layerDesc := pushBlob(t, r, repo, ocispec.MediaTypeImageLayerGzip, layer)
	m, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: cfgDesc, Layers: []ocispec.Descriptor{layerDesc},
	})
	return pushManifest(t, r, repo, tag, ocispec.MediaTypeImageManifest, m)
}

var bpfmanLabels = map[string]string{
	bpfman.ProgramsLabel: `{"with_config":"xdp","tc_prog":"tc"}`,
	bpfman.MapsLabel:     `{"seen":"lru_hash"}`,
}

func TestPullBpfmanImage(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	obj := readObject(t)
	desc := pushBpfmanImage(t, r, "bpfman/params", "v1", bpfmanLabels, tarGz(t, file("params.o", obj)))

	c := newClient(t, r)
	b, err := c.Pull(ctx, mustRef(t, r.Ref("bpfman/params", "v1")), registry.PullOptions{})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if b.Format != registry.FormatBpfman || b.Digest != desc.Digest || !bytes.Equal(b.Object, obj) || b.ObjectName != "params.o" {
		t.Fatalf("bundle %s format %s object %q (%d bytes)", b.Digest, b.Format, b.ObjectName, len(b.Object))
	}
	// The config is derived like a kfm bundle's: only the programs the
	// labels list, defaults from XDP_RUN_CONFIG.
	if got := strings.Join(b.Config.Functions(), ","); got != "tc_prog,with_config" {
		t.Errorf("programs %s", got)
	}
	wc, _ := b.Config.Program("with_config")
	if wc.Priority != 20 || b.Config.Name != "params" || b.Config.Version != "v1" || b.Config.License != "Dual BSD/GPL" {
		t.Errorf("config %+v, with_config %+v", b.Config, wc)
	}
	if b.Bpfman == nil || b.Bpfman.Maps["seen"] != "lru_hash" {
		t.Errorf("bpfman metadata %+v", b.Bpfman)
	}
	// Cached: opens offline by digest.
	if _, err := c.Open(ctx, b.Reference); err != nil {
		t.Fatalf("open: %v", err)
	}
}

func TestPullMultiPlatformBpfmanImage(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	img := pushBpfmanImage(t, r, "bpfman/multi", "host", bpfmanLabels, tarGz(t, file("params.o", readObject(t))))
	other := pushBpfmanImage(t, r, "bpfman/multi", "other", bpfmanLabels, tarGz(t, file("other.o", readObject(t))))
	img.Platform = &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	other.Platform = &ocispec.Platform{OS: "linux", Architecture: "s390x"}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{other, img}})
	idxDesc := pushManifest(t, r, "bpfman/multi", "latest", ocispec.MediaTypeImageIndex, idx)

	c := newClient(t, r)
	b, err := c.Pull(ctx, mustRef(t, r.Ref("bpfman/multi", "latest")), registry.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Digest != idxDesc.Digest || b.ManifestDigest != img.Digest || b.ObjectName != "params.o" {
		t.Fatalf("digest %s (index %s), manifest %s (want %s), object %s", b.Digest, idxDesc.Digest, b.ManifestDigest, img.Digest, b.ObjectName)
	}
	if _, err := c.Open(ctx, b.Reference); err != nil {
		t.Fatalf("open from cache: %v", err)
	}

	only, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{other}})
	pushManifest(t, r, "bpfman/multi", "s390x-only", ocispec.MediaTypeImageIndex, only)
	_, err = c.Pull(ctx, mustRef(t, r.Ref("bpfman/multi", "s390x-only")), registry.PullOptions{})
	if !errors.Is(err, registry.ErrNotBundle) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Fatalf("index without this platform: %v", err)
	}
}

func TestMaliciousBpfmanImagesAreRefused(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	obj := readObject(t)
	for _, tc := range []struct {
		name   string
		layer  []byte
		labels map[string]string
		want   string
	}{
		{"dot-dot", tarGz(t, file("../../etc/params.o", obj)), bpfmanLabels, "points outside"},
		{"absolute", tarGz(t, file("/params.o", obj)), bpfmanLabels, "absolute path"},
		{"symlink", tarGz(t, func(tw *tar.Writer) {
			_ = tw.WriteHeader(&tar.Header{Name: "params.o", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"})
		}), bpfmanLabels, "symbolic link"},
		{"hardlink", tarGz(t, func(tw *tar.Writer) {
			file("a.o", obj)(tw)
			_ = tw.WriteHeader(&tar.Header{Name: "params.o", Typeflag: tar.TypeLink, Linkname: "a.o"})
		}), bpfmanLabels, "hard link"},
		{"not gzip", obj, bpfmanLabels, "not gzip"},
		{"label names a missing function", tarGz(t, file("params.o", obj)), map[string]string{bpfman.ProgramsLabel: `{"nope":"xdp"}`}, `no program "nope"`},
		{"labels not JSON", tarGz(t, file("params.o", obj)), map[string]string{bpfman.ProgramsLabel: `nope`}, "JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := strings.ReplaceAll(tc.name, " ", "-")
			pushBpfmanImage(t, r, "bpfman/evil", tag, tc.labels, tc.layer)
			c := newClient(t, r)
			_, err := c.Pull(ctx, mustRef(t, r.Ref("bpfman/evil", tag)), registry.PullOptions{})
			if !errors.Is(err, registry.ErrInvalidBundle) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pull: %v; want ErrInvalidBundle saying %q", err, tc.want)
			}
			if blobs := cacheBlobs(t, c.Cache()); len(blobs) != 0 {
				t.Errorf("refused image left %d blobs in the cache", len(blobs))
			}
		})
	}
	// A container image without the labels is not a bundle at all.
	pushBpfmanImage(t, r, "bpfman/evil", "plain-image", map[string]string{"maintainer": "x"}, tarGz(t, file("bin/sh", []byte("#!"))))
	_, err := newClient(t, r).Pull(ctx, mustRef(t, r.Ref("bpfman/evil", "plain-image")), registry.PullOptions{})
	if !errors.Is(err, registry.ErrNotBundle) || !strings.Contains(err.Error(), "container image") {
		t.Fatalf("plain container image: %v", err)
	}
}
