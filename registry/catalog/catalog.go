package catalog

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/Masterminds/semver/v3"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/kfm-project/kfm/registry"
)

// Errors callers branch on.
var (
	// ErrNoCatalog: the registry refuses its catalog API and the
	// namespace has no catalog index artifact.
	ErrNoCatalog = errors.New("no catalog")
	// ErrInvalidNamespace: not HOST/NAMESPACE.
	ErrInvalidNamespace = errors.New("invalid namespace")
)

// Namespace is a registry host and a path prefix of repositories in it
// ("registry.example.com/net"); an empty Path means the whole registry.
type Namespace struct {
	Registry string
	Path     string
}

// ParseNamespace parses HOST[/PATH].
func ParseNamespace(s string) (Namespace, error) {
	s = strings.TrimSuffix(s, "/")
	host, path, _ := strings.Cut(s, "/")
	if host == "" {
		return Namespace{}, fmt.Errorf("%q: %w: want HOST/NAMESPACE, e.g. registry.example.com/net", s, ErrInvalidNamespace)
	}
	// Reuse the reference grammar: HOST/PATH/x:latest must parse.
	probe := host + "/" + strings.TrimPrefix(path+"/x", "/")
	if _, err := registry.ParseReference(probe); err != nil {
		return Namespace{}, fmt.Errorf("%q: %w: %w", s, ErrInvalidNamespace, err)
	}
	return Namespace{Registry: host, Path: path}, nil
}

func (n Namespace) String() string {
	if n.Path == "" {
		return n.Registry
	}
	return n.Registry + "/" + n.Path
}

// contains reports whether repository path repo lies in the namespace.
func (n Namespace) contains(repo string) bool {
	return n.Path == "" || strings.HasPrefix(repo, n.Path+"/")
}

// repoPath is the repository path of name inside the namespace.
func (n Namespace) repoPath(name string) string {
	if n.Path == "" {
		return name
	}
	return n.Path + "/" + name
}

// IndexRef is where the namespace's catalog index artifact lives:
// HOST/NAMESPACE/kfm-catalog:latest.
func (n Namespace) IndexRef() registry.Reference {
	return registry.Reference{Registry: n.Registry, Repository: n.repoPath(IndexRepository), Tag: IndexTag}
}

// Bundle is one bundle (repository) of a namespace and its latest version.
type Bundle struct {
	// Repository is HOST/PATH.
	Repository string `json:"repository"`
	// Latest is the tag of the latest version; Descriptor its manifest.
	Latest     string             `json:"latest"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
	// Versions are the version tags, newest first.
	Versions []string `json:"versions"`
	// Config is the latest version's bundle config.
	Config *registry.Config `json:"config"`
	// HasReadme: the latest version has a readme layer.
	HasReadme bool `json:"hasReadme,omitempty"`
	// Created is the latest version's creation annotation.
	Created string `json:"created,omitempty"`
}

// Ref is the reference of the latest version, pinned to its digest.
func (b *Bundle) Ref() registry.Reference {
	host, repo, _ := strings.Cut(b.Repository, "/")
	return registry.Reference{Registry: host, Repository: repo, Tag: b.Latest, Digest: b.Descriptor.Digest}
}

// Hooks are the hooks any program of the bundle may run on, sorted.
func (b *Bundle) Hooks() []string {
	var hs []string
	if b.Config == nil {
		return hs
	}
	for _, p := range b.Config.Programs {
		for _, h := range p.Hooks {
			if !slices.Contains(hs, string(h)) {
				hs = append(hs, string(h))
			}
		}
	}
	sort.Strings(hs)
	return hs
}

// Problem is a repository that could not be read.
type Problem struct {
	Repository string `json:"repository"`
	Error      string `json:"error"`
}

// Listing is what List found in one namespace.
type Listing struct {
	Namespace string `json:"namespace"`
	// From says where the list of repositories came from: "index" (the
	// catalog index artifact, at IndexDigest) or "catalog" (the
	// registry's catalog API).
	From        string        `json:"from"`
	IndexDigest digest.Digest `json:"indexDigest,omitempty"`
	Bundles     []Bundle      `json:"bundles"`
	Problems    []Problem     `json:"problems,omitempty"`
}

// Options tune List.
type Options struct {
	// Concurrency bounds the repositories read at once (default 8).
	Concurrency int
	// Live reads every bundle from the registry even when the namespace
	// has an index (which then only lists the repositories).
	Live bool
	// NoIndex ignores the index artifact and uses the catalog API.
	NoIndex bool
}

func (o Options) concurrency() int {
	if o.Concurrency <= 0 {
		return 8
	}
	return o.Concurrency
}

// List finds the bundles of namespace ns (see the package documentation for
// where from), sorted by repository.
func List(ctx context.Context, c *registry.Client, ns Namespace, opts Options) (*Listing, error) {
	l := &Listing{Namespace: ns.String(), Bundles: []Bundle{}}
	var repos []string
	if !opts.NoIndex {
		idx, d, err := FetchIndex(ctx, c, ns)
		switch {
		case err == nil && !opts.Live:
			l.From, l.IndexDigest, l.Bundles = "index", d, idx.Bundles
			sortBundles(l.Bundles)
			return l, nil
		case err == nil:
			l.From, l.IndexDigest = "index", d
			for _, b := range idx.Bundles {
				_, path, _ := strings.Cut(b.Repository, "/")
				repos = append(repos, path)
			}
		case errors.Is(err, registry.ErrNotFound):
			// No index: the catalog API.
		default:
			return nil, fmt.Errorf("%s: catalog index: %w", ns, err)
		}
	}
	if l.From == "" {
		var err error
		if repos, err = catalogRepositories(ctx, c, ns); err != nil {
			return nil, err
		}
		l.From = "catalog"
	}
	bundles, problems := Read(ctx, c, ns.Registry, repos, opts)
	l.Bundles, l.Problems = bundles, problems
	return l, nil
}

// catalogRepositories lists the namespace's repositories through the
// registry's catalog API.
func catalogRepositories(ctx context.Context, c *registry.Client, ns Namespace) ([]string, error) {
	var repos []string
	err := c.Repositories(ctx, ns.Registry, func(page []string) error {
		for _, r := range page {
			if ns.contains(r) && r != ns.repoPath(IndexRepository) {
				repos = append(repos, r)
			}
		}
		return nil
	})
	if errors.Is(err, registry.ErrUnauthorized) || errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w: the registry refuses its catalog API (%w) and %s has no catalog index; the publisher can push one with `kfm catalog publish --registry %s REPOSITORY...`",
			ns, ErrNoCatalog, err, ns.IndexRef(), ns)
	}
	return repos, err
}

// Read reads the bundles of the repositories (paths in registry host) in
// parallel, at most opts.Concurrency at a time: tags, latest version,
// metadata. Repositories without kfm bundles are left out; those that fail
// become Problems. Both are sorted by repository.
func Read(ctx context.Context, c *registry.Client, host string, repos []string, opts Options) ([]Bundle, []Problem) {
	var (
		mu       sync.Mutex
		bundles  = []Bundle{}
		problems []Problem
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.concurrency())
	for _, repo := range repos {
		g.Go(func() error {
			b, err := ReadBundle(gctx, c, registry.Reference{Registry: host, Repository: repo})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, registry.ErrNotBundle), errors.Is(err, errNoVersions):
			case err != nil:
				problems = append(problems, Problem{Repository: host + "/" + repo, Error: err.Error()})
			default:
				bundles = append(bundles, *b)
			}
			return nil
		})
	}
	_ = g.Wait()
	sortBundles(bundles)
	sort.Slice(problems, func(i, j int) bool { return problems[i].Repository < problems[j].Repository })
	return bundles, problems
}

func sortBundles(bs []Bundle) {
	sort.Slice(bs, func(i, j int) bool { return bs[i].Repository < bs[j].Repository })
}

var errNoVersions = errors.New("no version tags")

// ReadBundle reads the repository of ref: its version tags and the metadata
// of its latest version.
func ReadBundle(ctx context.Context, c *registry.Client, ref registry.Reference) (*Bundle, error) {
	tags, err := c.Tags(ctx, ref)
	if err != nil {
		return nil, err
	}
	versions := Versions(tags)
	if len(versions) == 0 {
		return nil, fmt.Errorf("%s: %w", ref.Repo(), errNoVersions)
	}
	latest := Latest(versions)
	ref.Tag, ref.Digest = latest, ""
	md, err := c.FetchMetadata(ctx, ref, false)
	if err != nil {
		return nil, err
	}
	return &Bundle{
		Repository: ref.Repo(),
		Latest:     latest,
		Descriptor: md.Descriptor,
		Versions:   versions,
		Config:     md.Config,
		HasReadme:  md.HasReadme,
		Created:    md.Manifest.Annotations[registry.AnnotationCreated],
	}, nil
}

// isVersionTag tells version tags from the tags signatures and referrers
// leave behind.
func isVersionTag(t string) bool {
	if strings.HasPrefix(t, "sha256-") || strings.HasPrefix(t, "sha512-") {
		return false // cosign .sig/.att/.sbom and the referrers tag schema
	}
	return t != ""
}

// fullSemver: MAJOR.MINOR.PATCH with an optional "v", pre-release and build
// (semver.NewVersion alone also accepts "1" and "1.2").
var fullSemver = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$`)

// Versions filters the version tags out of tags and orders them newest
// first: semver tags by semver (highest first), then other tags, "latest"
// first and the rest in reverse lexical order.
func Versions(tags []string) []string {
	type sv struct {
		tag string
		v   *semver.Version
	}
	var sem []sv
	var other []string
	for _, t := range tags {
		if !isVersionTag(t) {
			continue
		}
		if v, err := semver.NewVersion(t); err == nil && fullSemver.MatchString(t) {
			sem = append(sem, sv{t, v})
			continue
		}
		other = append(other, t)
	}
	sort.SliceStable(sem, func(i, j int) bool {
		if c := sem[i].v.Compare(sem[j].v); c != 0 {
			return c > 0
		}
		return sem[i].tag > sem[j].tag
	})
	sort.Slice(other, func(i, j int) bool {
		if (other[i] == registry.DefaultTag) != (other[j] == registry.DefaultTag) {
			return other[i] == registry.DefaultTag
		}
		return other[i] > other[j]
	})
	out := make([]string, 0, len(sem)+len(other))
	for _, s := range sem {
		out = append(out, s.tag)
	}
	return append(out, other...)
}

// Latest picks the latest version of versions (as Versions orders them):
// the highest semver release, else the highest pre-release, else "latest",
// else the first.
func Latest(versions []string) string {
	for _, t := range versions {
		if v, err := semver.NewVersion(t); err == nil && v.Prerelease() == "" && fullSemver.MatchString(t) {
			return t
		}
	}
	if len(versions) == 0 {
		return ""
	}
	return versions[0]
}
