package registry_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
)

func TestCheckSPDX(t *testing.T) {
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{"MIT", true},
		{"GPL-2.0-only OR BSD-2-Clause", true},
		{"GPL-2.0+", true},
		{"(MIT OR Apache-2.0) AND BSD-3-Clause", true},
		{"GPL-2.0-or-later WITH Linux-syscall-note", true},
		{"LicenseRef-acme-1", true},
		{"DocumentRef-spdx-tool-1.2:LicenseRef-MIT-Style-2", true},
		{"mit or apache-2.0", true},
		{"Dual BSD/GPL", false},
		{"GPL v2", false},
		{"MIT OR", false},
		{"(MIT", false},
		{"MIT)", false},
		{"AND MIT", false},
		{"MIT WITH", false},
		{"MIT Or Apache-2.0", false},
		{"", false},
		{"DocumentRef-x:MIT", false},
	} {
		err := registry.CheckSPDX(tc.expr)
		if (err == nil) != tc.ok {
			t.Errorf("CheckSPDX(%q) = %v, want ok=%v", tc.expr, err, tc.ok)
		}
	}
}

func TestBundleFileMetadata(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, err string
	}{
		{"all fields", "keywords: [rate-limit, ipv4]\ncategories: [ratelimit, firewall]\nauthors: [\"A <a@example.com>\"]\nhomepage: https://example.com\nlicense: MIT\n", ""},
		{"unknown category", "categories: [firewal]\n", `category "firewal" is not one kfm knows; use one of ratelimit, firewall`},
		{"keyword", "keywords: [Rate Limit]\n", `keyword "Rate Limit"`},
		{"licence", "license: Dual BSD/GPL\n", "not an SPDX licence expression"},
		{"homepage", "homepage: ftp://example.com\n", "homepage: \"ftp://example.com\" is not an http(s) URL"},
		{"multi-line description", "description: \"a\\nb\"\n", "description: one line"},
		{"min kernel", "programs:\n  - function: f\n    minKernel: latest\n", `minKernel "latest"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := registry.ParseBundleFile([]byte(tc.yaml))
			switch {
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, registry.ErrInvalidBundle)):
				t.Fatalf("got %v, want an ErrInvalidBundle with %q", err, tc.err)
			}
		})
	}
}

func TestReadmeLimits(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.yaml")
	os.WriteFile(bundle, []byte("readme: docs/README.md\n"), 0o644)
	if _, err := registry.ReadBundleFile(bundle); err == nil || !strings.Contains(err.Error(), "README.md") {
		t.Errorf("missing readme: %v", err)
	}
	os.Mkdir(filepath.Join(dir, "docs"), 0o755)
	os.WriteFile(filepath.Join(dir, "docs", "README.md"), []byte(strings.Repeat("x", registry.MaxReadmeSize+1)), 0o644)
	if _, err := registry.ReadBundleFile(bundle); err == nil || !strings.Contains(err.Error(), "at most 65536") {
		t.Errorf("oversized readme: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "docs", "README.md"), []byte("\xff\xfe"), 0o644)
	if _, err := registry.ReadBundleFile(bundle); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("binary readme: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "docs", "README.md"), []byte("# hello\n"), 0o644)
	bf, err := registry.ReadBundleFile(bundle)
	if err != nil || string(bf.ReadmeData) != "# hello\n" {
		t.Fatalf("readme relative to bundle.yaml: %v %q", err, bf.ReadmeData)
	}
}

// The metadata and the readme layer survive publish, pull (into the cache
// and again from it) and FetchMetadata; standard annotations are set; a
// bundle without the new fields still reads.
func TestMetadataRoundTrip(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	c := newClient(t, r)
	bf, err := registry.ParseBundleFile([]byte(testBundleYAML + "homepage: https://example.com/home\nkeywords: [demo]\ncategories: [testing]\nauthors: [\"Jane <jane@example.com>\", Joe]\n"))
	if err != nil {
		t.Fatal(err)
	}
	bf.ReadmeData = []byte("# params-demo\n\nA **test**.\n")
	b := pack(t, registry.PackOptions{BundleFile: bf})
	ann := b.Manifest.Annotations
	if ann[registry.AnnotationURL] != "https://example.com/home" || ann[registry.AnnotationAuthors] != "Jane <jane@example.com>, Joe" {
		t.Errorf("annotations: %v", ann)
	}
	ref, _ := registry.ParseReference(r.Ref("kfm/meta", "1.0.0"))
	if _, err := c.Publish(ctx, b, ref); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // from the registry, then from the cache
		got, err := c.Pull(ctx, ref, registry.PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Readme != string(bf.ReadmeData) || got.Config.Homepage != "https://example.com/home" || strings.Join(got.Config.Categories, ",") != "testing" || len(got.Config.Authors) != 2 {
			t.Errorf("pull %d: readme %q config %+v", i, got.Readme, got.Config)
		}
	}
	md, err := c.FetchMetadata(ctx, ref, true)
	if err != nil || !md.HasReadme || md.Readme != string(bf.ReadmeData) || md.Config.Keywords[0] != "demo" || md.Reference.Digest != b.Digest {
		t.Fatalf("FetchMetadata: %v %+v", err, md)
	}
	if md, err = c.FetchMetadata(ctx, ref, false); err != nil || md.Readme != "" || !md.HasReadme {
		t.Fatalf("FetchMetadata without readme: %v %+v", err, md)
	}

	// An older bundle: no new fields, no readme layer.
	old := pack(t, registry.PackOptions{})
	oldRef, _ := registry.ParseReference(r.Ref("kfm/old", "1.0.0"))
	if _, err := c.Publish(ctx, old, oldRef); err != nil {
		t.Fatal(err)
	}
	if len(old.Manifest.Layers) != 1 {
		t.Errorf("a bundle without readme has %d layers", len(old.Manifest.Layers))
	}
	md, err = c.FetchMetadata(ctx, oldRef, true)
	if err != nil || md.HasReadme || md.Config.Categories != nil {
		t.Fatalf("older bundle: %v %+v", err, md)
	}
}
