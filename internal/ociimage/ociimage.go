package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"

	"github.com/kfm-project/kfm/registry"
)

// BinaryPath is where the kfm binary sits in the image (the entrypoint).
const BinaryPath = "/usr/bin/kfm"

// CABundlePath is where a CA bundle goes (Go's crypto/x509 reads it there).
const CABundlePath = "/etc/ssl/certs/ca-certificates.crt"

// Options describe the image.
type Options struct {
	// Binary is the static kfm executable.
	Binary []byte
	// CABundle, when set, is installed at CABundlePath.
	CABundle []byte
	// Created is the time written everywhere (files, config, history).
	Created time.Time
	// Version labels the image (org.opencontainers.image.version).
	Version string
	// Arch is the GOARCH of Binary (default amd64).
	Arch string
}

type file struct {
	name string
	mode int64
	data []byte
	dir  bool
}

// Build returns the image.
func Build(opts Options) (v1.Image, error) {
	if len(opts.Binary) == 0 {
		return nil, fmt.Errorf("ociimage: no kfm binary")
	}
	if opts.Arch == "" {
		opts.Arch = "amd64"
	}
	files := []file{
		{name: BinaryPath, mode: 0o755, data: opts.Binary},
		// kfm's default paths, so that a container without volumes
		// still starts (the DaemonSet mounts the host's over them).
		{name: "/etc/kfm", mode: 0o755, dir: true},
		{name: "/var/cache/kfm", mode: 0o755, dir: true},
		{name: "/run/kfm", mode: 0o755, dir: true},
		{name: "/tmp", mode: 0o1777, dir: true},
	}
	if len(opts.CABundle) > 0 {
		files = append(files, file{name: CABundlePath, mode: 0o644, data: opts.CABundle})
	}
	layerTar, err := tarOf(files, opts.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: opts.Created}, CreatedBy: "kfm internal/ociimage: " + BinaryPath},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", opts.Arch
	cf.Created = v1.Time{Time: opts.Created}
	cf.Config.Entrypoint = []string{BinaryPath}
	cf.Config.Cmd = []string{"agent", "--source", "kubernetes"}
	cf.Config.Env = []string{"PATH=/usr/bin"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   "kfm",
		"org.opencontainers.image.source":  "https://github.com/kfm-project/kfm",
		"org.opencontainers.image.version": opts.Version,
	}
	return mutate.ConfigFile(img, cf)
}

// tarOf writes files (and their parent directories) sorted by name, owned
// by root, with every time set to created.
func tarOf(files []file, created time.Time) ([]byte, error) {
	all := map[string]file{}
	for _, f := range files {
		all[f.name] = f
		for d := path.Dir(f.name); d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = file{name: d, mode: 0o755, dir: true}
			}
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		f := all[n]
		h := &tar.Header{
			Name: n[1:], Mode: f.mode, ModTime: created, AccessTime: created, ChangeTime: created,
			Uname: "root", Gname: "root", Format: tar.FormatPAX,
		}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteLayout writes img as the only image of a fresh OCI image layout in
// dir (replacing what was there), named ref in the index.
func WriteLayout(dir string, img v1.Image, ref string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}))
}

// Push copies the image named tag in the OCI layout dir to ref
// (host/repo:tag) with kfm's registry client: Docker credentials, plain
// HTTP for a loopback registry without TLS.
func Push(ctx context.Context, dir, tag, ref string) (registry.Reference, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return registry.Reference{}, err
	}
	if r.Tag == "" || r.Digest != "" {
		return registry.Reference{}, fmt.Errorf("push %s: name a tag (host/repo:tag)", ref)
	}
	client, err := registry.NewClient(registry.Options{})
	if err != nil {
		return registry.Reference{}, err
	}
	repo, err := client.Repository(ctx, r)
	if err != nil {
		return registry.Reference{}, err
	}
	store, err := oci.New(dir)
	if err != nil {
		return registry.Reference{}, err
	}
	desc, err := oras.Copy(ctx, store, tag, repo, r.Tag, oras.DefaultCopyOptions)
	if err != nil {
		return registry.Reference{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return r.Pinned(desc.Digest), nil
}

var (
	newNameLine = regexp.MustCompile(`(?m)^([ \t]+newName:[ \t]*).*$`)
	digestLine  = regexp.MustCompile(`(?m)^([ \t]+digest:[ \t]*)sha256:[0-9a-f]{64}[ \t]*$`)
)

// SetKustomizationImage rewrites the newName and digest of the images
// entry of a kustomization.yaml (kfm's has one), so that the DaemonSet
// runs exactly the pushed image.
func SetKustomizationImage(path string, pushed registry.Reference) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	if !newNameLine.MatchString(s) || !digestLine.MatchString(s) {
		return fmt.Errorf("%s: no images entry with newName and digest to set", path)
	}
	s = newNameLine.ReplaceAllString(s, "${1}"+pushed.Repo())
	s = digestLine.ReplaceAllString(s, "${1}"+pushed.Digest.String())
	return os.WriteFile(path, []byte(s), 0o644)
}
