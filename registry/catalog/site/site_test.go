package site_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
	"github.com/kfm-project/kfm/registry/catalog/site"
)

// A readme cannot inject script or event handlers into the site.
func TestRenderMarkdownIsSafe(t *testing.T) {
	for _, src := range []string{
		"<script>alert(1)</script>",
		"hello <img src=x onerror=alert(1)>",
		"[click](javascript:alert(1))",
		"[click](JaVaScRiPt:alert(1))",
		"<a href=\"javascript:alert(1)\">x</a>",
		"![x](data:text/html;base64,PHNjcmlwdD4=)",
		"<iframe src=https://example.com></iframe>",
	} {
		html, err := site.RenderMarkdown([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		low := strings.ToLower(string(html))
		for _, bad := range []string{"<script", "onerror", "javascript:", "<iframe", "data:text/html", "<img src=x"} {
			if strings.Contains(low, bad) {
				t.Errorf("%q renders as %q", src, html)
			}
		}
	}
	html, _ := site.RenderMarkdown([]byte("# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[docs](https://example.com) `code`\n"))
	for _, want := range []string{`<h1 id="title">Title</h1>`, "<table>", "<td>1</td>", `<a href="https://example.com">docs</a>`, "<code>code</code>"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("rendered markdown lacks %q: %s", want, html)
		}
	}
}

func page(repo, readme string) *catalog.Page {
	d := digest.FromString(repo)
	return &catalog.Page{
		Repository: repo, Latest: "1.0.0", Shown: "1.0.0",
		Versions: []catalog.Version{{Tag: "1.0.0", Descriptor: ocispec.Descriptor{Digest: d}, Trust: catalog.Trust{Status: catalog.TrustUnsigned}}},
		Metadata: &registry.Metadata{
			Reference: registry.Reference{Digest: d},
			Readme:    readme,
			Config: &registry.Config{Name: filepath.Base(repo), Description: "a <b>bold</b> claim", Categories: []string{"firewall"}, Programs: []registry.ProgramConfig{
				{Function: "f", Type: "xdp", Hooks: []bpf.Hook{bpf.HookXDP}, ProceedOn: []string{"pass"}},
			}},
		},
	}
}

func TestBuild(t *testing.T) {
	pages := []*catalog.Page{page("r.example/net/b", "# B\n<script>alert(1)</script>"), page("r.example/net/a", "")}
	dir := filepath.Join(t.TempDir(), "out")
	if err := site.Build(dir, pages, site.Options{}); err != nil {
		t.Fatal(err)
	}
	index, _ := os.ReadFile(filepath.Join(dir, "index.html"))
	b, _ := os.ReadFile(filepath.Join(dir, "bundles", "r.example-net-b.html"))
	if !bytes.Contains(index, []byte(`href="bundles/r.example-net-a.html"`)) || bytes.Index(index, []byte("net-a.html")) > bytes.Index(index, []byte("net-b.html")) {
		t.Errorf("index: pages not linked in repository order:\n%s", index)
	}
	if bytes.Contains(b, []byte("<script>alert")) || bytes.Contains(b, []byte("<b>bold")) || !bytes.Contains(b, []byte("a &lt;b&gt;bold&lt;/b&gt; claim")) {
		t.Errorf("bundle page is not escaped:\n%s", b)
	}
	if !bytes.Contains(b, []byte("This bundle records no capabilities")) {
		t.Errorf("no capabilities placeholder")
	}
	// Capabilities, when the caller computes them.
	dir2 := filepath.Join(t.TempDir(), "out")
	err := site.Build(dir2, pages, site.Options{Capabilities: func(*catalog.Page, *registry.ProgramConfig) ([]string, bool) {
		return []string{"reads packets only"}, true
	}})
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := os.ReadFile(filepath.Join(dir2, "bundles", "r.example-net-b.html"))
	if !bytes.Contains(b2, []byte("<li>reads packets only</li>")) {
		t.Errorf("capabilities not shown")
	}
	// Rebuilt in place, byte for byte; a foreign directory is refused.
	if err := site.Build(dir, []*catalog.Page{pages[1], pages[0]}, site.Options{}); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "index.html"))
	if !bytes.Equal(index, again) {
		t.Errorf("same pages, different index")
	}
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o644)
	if err := site.Build(foreign, pages, site.Options{}); !errors.Is(err, site.ErrNotCatalogDir) {
		t.Errorf("foreign directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(foreign, "notes.txt")); err != nil {
		t.Errorf("foreign file removed: %v", err)
	}
}
