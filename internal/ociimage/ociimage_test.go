package ociimage_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/kfm-project/kfm/internal/ociimage"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/manifests"
)

func TestReproducible(t *testing.T) {
	created := time.Unix(1700000000, 0).UTC()
	bin := bytes.Repeat([]byte("kfm binary "), 1000)
	build := func(o ociimage.Options) string {
		t.Helper()
		img, err := ociimage.Build(o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	base := ociimage.Options{Binary: bin, Created: created, Version: "1.0.0"}
	first := build(base)
	if again := build(base); again != first {
		t.Errorf("two builds of the same binary: %s and %s", first, again)
	}
	for _, tc := range []struct {
		name string
		o    ociimage.Options
	}{
		{"another binary", ociimage.Options{Binary: append(bytes.Clone(bin), 'x'), Created: created, Version: "1.0.0"}},
		{"another time", ociimage.Options{Binary: bin, Created: created.Add(time.Second), Version: "1.0.0"}},
		{"with a CA bundle", ociimage.Options{Binary: bin, Created: created, Version: "1.0.0", CABundle: []byte("pem")}},
	} {
		if d := build(tc.o); d == first {
			t.Errorf("%s: same digest %s", tc.name, d)
		}
	}
}

func TestLayout(t *testing.T) {
	bin := []byte("\x7fELF kfm")
	img, err := ociimage.Build(ociimage.Options{Binary: bin, Created: time.Unix(0, 0).UTC(), Version: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "image")
	if err := ociimage.WriteLayout(dir, img, "dev"); err != nil {
		t.Fatal(err)
	}
	// The index names the image; its manifest and blobs are there.
	var index struct {
		Manifests []struct {
			MediaType   string
			Digest      string
			Annotations map[string]string
		}
	}
	readJSON(t, filepath.Join(dir, "index.json"), &index)
	d, _ := img.Digest()
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != d.String() ||
		index.Manifests[0].MediaType != "application/vnd.oci.image.manifest.v1+json" ||
		index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "dev" {
		t.Fatalf("index.json: %+v, image %s", index, d)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		t.Error(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if ep := cf.Config.Entrypoint; len(ep) != 1 || ep[0] != ociimage.BinaryPath || cf.OS != "linux" || !cf.Created.Equal(time.Unix(0, 0)) {
		t.Errorf("config: entrypoint %v, os %s, created %v", ep, cf.OS, cf.Created)
	}
	// One layer: kfm, executable, owned by root, at the epoch.
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: uid %d gid %d mtime %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		if "/"+h.Name == ociimage.BinaryPath {
			found = true
			data, _ := io.ReadAll(tr)
			if h.Mode != 0o755 || !bytes.Equal(data, bin) {
				t.Errorf("%s: mode %o, %d bytes", h.Name, h.Mode, len(data))
			}
		}
	}
	if !found {
		t.Errorf("no %s in the layer", ociimage.BinaryPath)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// make image IMAGE=...: the layout's image goes to a registry, and the
// kustomization then names it by that digest.
func TestPushAndKustomization(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := testregistry.Start(t, testregistry.Options{})
	img, err := ociimage.Build(ociimage.Options{Binary: []byte("kfm"), Created: time.Unix(0, 0).UTC(), Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	dir := filepath.Join(t.TempDir(), "image")
	if err := ociimage.WriteLayout(dir, img, "v1"); err != nil {
		t.Fatal(err)
	}
	pushed, err := ociimage.Push(context.Background(), dir, "v1", reg.Ref("kfm/kfm", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if pushed.Digest.String() != d.String() {
		t.Errorf("pushed %s, built %s", pushed, d)
	}
	// The registry serves it under the tag.
	repo, err := remote.NewRepository(reg.Host() + "/kfm/kfm")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	desc, err := repo.Resolve(context.Background(), "v1")
	if err != nil || desc.Digest.String() != d.String() {
		t.Errorf("registry tag v1: %v %v, want %s", desc.Digest, err, d)
	}

	kust := filepath.Join(t.TempDir(), "kustomization.yaml")
	orig, err := manifests.FS.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kust, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ociimage.SetKustomizationImage(kust, pushed); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(kust)
	if !bytes.Contains(got, []byte("newName: "+reg.Host()+"/kfm/kfm\n")) || !bytes.Contains(got, []byte("digest: "+d.String()+"\n")) {
		t.Errorf("kustomization after make image:\n%s", got)
	}
	if err := ociimage.SetKustomizationImage(filepath.Join(t.TempDir(), "none.yaml"), pushed); err == nil {
		t.Error("a missing kustomization: no error")
	}
}
