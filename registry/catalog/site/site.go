package site

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/parser"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
)

//go:embed assets
var assets embed.FS

// Marker is the file Build leaves in a catalog directory; Build replaces
// only directories that hold it (or are empty).
const Marker = ".kfm-catalog"

// ErrNotCatalogDir: the output directory holds files and was not made by
// Build.
var ErrNotCatalogDir = errors.New("not a kfm catalog directory")

// Options tune Build.
type Options struct {
	// Title heads every page (default "kfm catalog").
	Title string
	// Namespaces are named on the index page.
	Namespaces []string
	// Capabilities, when set, lists what a program can do (computed from
	// its bytecode); each line becomes an item of the program's
	// Capabilities section. known is false when the bundle records none
	// (published before kfm computed them); then, as without the
	// function, the section says that they are not shown.
	Capabilities func(b *catalog.Page, p *registry.ProgramConfig) (lines []string, known bool)
}

// Build writes the site for pages into dir (created when missing): index.html,
// bundles/*.html, assets/ and the marker file.
func Build(dir string, pages []*catalog.Page, opts Options) error {
	if opts.Title == "" {
		opts.Title = "kfm catalog"
	}
	if err := prepare(dir); err != nil {
		return err
	}
	pages = slices.Clone(pages)
	sort.Slice(pages, func(i, j int) bool { return pages[i].Repository < pages[j].Repository })
	slugs := slugsFor(pages)
	files := map[string][]byte{Marker: []byte("kfm catalog: made by `kfm catalog build`; rebuilt in place\n")}
	for _, name := range []string{"style.css", "search.js"} {
		data, err := assets.ReadFile("assets/" + name)
		if err != nil {
			return err
		}
		files["assets/"+name] = data
	}
	idx := indexView{Title: opts.Title, PageTitle: opts.Title, Namespaces: opts.Namespaces, Bundles: []cardView{}}
	cats, hooks := map[string]bool{}, map[string]bool{}
	for i, p := range pages {
		pv, err := pageViewOf(p, opts)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Repository, err)
		}
		var buf bytes.Buffer
		if err := pageTmpl.Execute(&buf, pv); err != nil {
			return err
		}
		files["bundles/"+slugs[i]+".html"] = buf.Bytes()
		card := cardOf(p, "bundles/"+slugs[i]+".html")
		for _, c := range card.Categories {
			cats[c] = true
		}
		for _, h := range card.Hooks {
			hooks[h] = true
		}
		idx.Bundles = append(idx.Bundles, card)
	}
	idx.Categories = sortedKeys(cats)
	idx.Hooks = sortedKeys(hooks)
	var buf bytes.Buffer
	if err := indexTmpl.Execute(&buf, idx); err != nil {
		return err
	}
	files["index.html"] = buf.Bytes()
	for _, name := range slices.Sorted(mapsKeys(files)) {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// prepare makes dir ready: created, or emptied of a previous build.
func prepare(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(dir, 0o755)
	case err != nil:
		return err
	case len(entries) == 0:
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, Marker)); err != nil {
		return fmt.Errorf("%s: %w: it holds files and no %s; choose an empty or new directory", dir, ErrNotCatalogDir, Marker)
	}
	for _, name := range []string{"index.html", "bundles", "assets", Marker} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

var unsafeSlug = regexp.MustCompile(`[^a-z0-9._-]+`)

// slugsFor names each page's file after its repository; equal names get
// -2, -3... in repository order.
func slugsFor(pages []*catalog.Page) []string {
	out := make([]string, len(pages))
	used := map[string]bool{}
	for i, p := range pages {
		base := strings.Trim(unsafeSlug.ReplaceAllString(strings.ToLower(p.Repository), "-"), "-.")
		if base == "" {
			base = "bundle"
		}
		s := base
		for n := 2; used[s]; n++ {
			s = fmt.Sprintf("%s-%d", base, n)
		}
		used[s] = true
		out[i] = s
	}
	return out
}

type indexView struct {
	Title, PageTitle, Root string
	Namespaces             []string
	Bundles                []cardView
	Categories             []string
	Hooks                  []string
}

type cardView struct {
	Name, Repository, Latest, Description, Href string
	Categories, Hooks, Keywords                 []string
	Trust                                       catalog.Trust
	// Text is what the search box matches, lower case.
	Text string
}

func cardOf(p *catalog.Page, href string) cardView {
	cfg := p.Metadata.Config
	hooks := map[string]bool{}
	for _, pr := range cfg.Programs {
		for _, h := range pr.Hooks {
			hooks[string(h)] = true
		}
	}
	c := cardView{
		Name: cfg.Name, Repository: p.Repository, Latest: p.Shown, Description: cfg.Description, Href: href,
		Categories: cfg.Categories, Hooks: sortedKeys(hooks), Keywords: cfg.Keywords, Trust: p.ShownTrust(),
	}
	c.Text = strings.ToLower(strings.Join(append(append([]string{c.Name, c.Repository, c.Description}, c.Keywords...), c.Categories...), " "))
	return c
}

type pageView struct {
	Title, PageTitle, Root                 string
	Name, Repository, Shown, Latest        string
	Description, License, Homepage, Source string
	Created, Digest, Install               string
	Keywords, Categories, Authors          []string
	Versions                               []catalog.Version
	MoreVersions                           int
	Trust                                  catalog.Trust
	Programs                               []programView
	Readme                                 template.HTML
}

type programView struct {
	registry.ProgramConfig
	HooksText, ProceedText, Requires string
	// Capabilities is nil when this kfm does not compute them.
	Capabilities []string
	Computed     bool
}

func pageViewOf(p *catalog.Page, opts Options) (*pageView, error) {
	md := p.Metadata
	cfg := md.Config
	pv := &pageView{
		Title: opts.Title, PageTitle: cfg.Name + " - " + opts.Title, Root: "../", Name: cfg.Name, Repository: p.Repository, Shown: p.Shown, Latest: p.Latest,
		Description: cfg.Description, License: cfg.License, Homepage: cfg.Homepage, Source: cfg.Source,
		Created: md.Manifest.Annotations[registry.AnnotationCreated], Digest: md.Reference.Digest.String(),
		Keywords: cfg.Keywords, Categories: cfg.Categories, Authors: cfg.Authors,
		Versions: p.Versions, MoreVersions: p.MoreVersions, Trust: p.ShownTrust(),
		Install: fmt.Sprintf("kfm install %s:%s --iface IF", p.Repository, p.Shown),
	}
	for i := range cfg.Programs {
		pc := &cfg.Programs[i]
		var hooks []string
		for _, h := range pc.Hooks {
			hooks = append(hooks, string(h))
		}
		req := slices.Clone(pc.RequiredFeatures)
		if pc.MinKernel != "" {
			req = append([]string{"kernel " + pc.MinKernel + "+"}, req...)
		}
		prog := programView{ProgramConfig: *pc, HooksText: strings.Join(hooks, ", "), ProceedText: strings.Join(pc.ProceedOn, ", "), Requires: strings.Join(req, ", ")}
		if opts.Capabilities != nil {
			prog.Capabilities, prog.Computed = opts.Capabilities(p, pc)
		}
		pv.Programs = append(pv.Programs, prog)
	}
	if md.Readme != "" {
		html, err := RenderMarkdown([]byte(md.Readme))
		if err != nil {
			return nil, fmt.Errorf("readme: %w", err)
		}
		pv.Readme = html
	}
	return pv, nil
}

// RenderMarkdown renders markdown to HTML with raw HTML dropped and
// dangerous link destinations removed (see the package documentation).
func RenderMarkdown(src []byte) (template.HTML, error) {
	md := goldmark.New(
		goldmark.WithExtensions(extension.GFM),
		goldmark.WithParserOptions(parser.WithAutoHeadingID()),
		// No html.WithUnsafe(): raw HTML and javascript: links are
		// left out of the output.
	)
	var buf bytes.Buffer
	if err := md.Convert(src, &buf); err != nil {
		return "", err
	}
	return template.HTML(buf.String()), nil //nolint:gosec // goldmark output without WithUnsafe is safe HTML
}
