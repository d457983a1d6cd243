//go:build !kfm_core

package main

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
	"github.com/kfm-project/kfm/registry/catalog/site"
)

func newCatalogCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "Publish a namespace's catalog index, or build a static HTML catalog site",
	}
	cmd.AddCommand(newCatalogPublishCommand(g), newCatalogBuildCommand(g))
	return cmd
}

type catalogPublishResult struct {
	Reference string           `json:"reference"`
	Bundles   []catalog.Bundle `json:"bundles"`
}

func newCatalogPublishCommand(g *globals) *cobra.Command {
	var (
		rf        registryFlags
		namespace string
	)
	cmd := &cobra.Command{
		Use:   "publish --registry HOST/NAMESPACE [REPOSITORY...]",
		Short: "Push the catalog index artifact that kfm search reads",
		Long: `catalog publish reads the bundles of a namespace (each repository's version
tags and its latest version's metadata; never objects) and pushes them as the
catalog index artifact HOST/NAMESPACE/kfm-catalog:latest: an OCI artifact of
type application/vnd.kfm.catalog.v1 whose one layer
(application/vnd.kfm.catalog.index.v1+json) lists every bundle. kfm search
reads this index before the registry's catalog API, so registries that refuse
the catalog API become searchable. Run it again after publishing bundles.

The repositories are the REPOSITORY arguments (paths below the namespace, e.g.
xdp-ratelimit), or without arguments every repository the registry's catalog
API lists under the namespace. A repository that cannot be read or holds no
kfm bundle fails the command and nothing is pushed: an index must not hide
bundles. The index's creation time is SOURCE_DATE_EPOCH (default 1970-01-01),
so the same registry state gives the same digest.`,
		Example: `  kfm catalog publish --registry registry.example.com/net xdp-ratelimit xdp-count
  kfm catalog publish --registry localhost:5000/kfm`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nss, err := parseNamespaces([]string{namespace})
			if err != nil {
				return err
			}
			ns := nss[0]
			created, err := registry.SourceDateEpoch()
			if err != nil {
				return usageError{err}
			}
			c, err := g.registryClient(ctx, &rf, false)
			if err != nil {
				return err
			}
			var bundles []catalog.Bundle
			var problems []catalog.Problem
			if len(args) > 0 {
				var repos []string
				for _, a := range args {
					repos = append(repos, ns.Path+"/"+a)
					if ns.Path == "" {
						repos[len(repos)-1] = a
					}
				}
				bundles, problems = catalog.Read(ctx, c, ns.Registry, repos, catalog.Options{})
				if len(bundles)+len(problems) < len(repos) {
					return fmt.Errorf("%s: %d of the %d repositories named hold no kfm bundle with a version tag", ns, len(repos)-len(bundles)-len(problems), len(repos))
				}
			} else {
				l, err := catalog.List(ctx, c, ns, catalog.Options{NoIndex: true})
				if err != nil {
					return registryError(err)
				}
				bundles, problems = l.Bundles, l.Problems
			}
			if len(problems) > 0 {
				var errs []error
				for _, p := range problems {
					errs = append(errs, fmt.Errorf("%s: %s", p.Repository, p.Error))
				}
				return fmt.Errorf("nothing pushed: %w", errors.Join(errs...))
			}
			pinned, err := catalog.PublishIndex(ctx, c, ns, bundles, created)
			if err != nil {
				return registryError(err)
			}
			res := catalogPublishResult{Reference: pinned.String(), Bundles: bundles}
			return g.report(res, func(w io.Writer) error {
				fmt.Fprintf(w, "%s\n%d bundle(s) indexed\n", res.Reference, len(bundles))
				return nil
			})
		},
	}
	rf.add(cmd, false)
	cmd.Flags().StringVar(&namespace, "registry", "", "the namespace to index, HOST/NAMESPACE")
	return cmd
}

type catalogBuildResult struct {
	Dir      string            `json:"dir"`
	Bundles  []string          `json:"bundles"`
	Problems []catalog.Problem `json:"problems,omitempty"`
}

func newCatalogBuildCommand(g *globals) *cobra.Command {
	var (
		rf         registryFlags
		registries []string
		dir        string
		policyPath string
		title      string
	)
	cmd := &cobra.Command{
		Use:   "build --registry HOST/NAMESPACE [--registry ...] --dir DIR",
		Short: "Build a static HTML site of the bundles of registry namespaces",
		Long: `catalog build writes a static HTML catalog of the bundles of one or more
registry namespaces into DIR: index.html, searchable as you type and
filterable by category and hook (a little plain JavaScript, no framework),
and one page per bundle (bundles/*.html) with its versions and who signed
each as the local trust policy sees it (--policy, default
<config-dir>/policy.yaml), programs, params, maps, an install snippet and the
readme rendered from markdown (raw HTML dropped). Links are relative: serve
DIR from any path or open index.html from disk. The same registry state gives
the same bytes.

Bundles are found as kfm search finds them (catalog index artifact, else the
catalog API), then read from the registry. DIR is created, or rebuilt when a
previous catalog build made it; any other non-empty directory is refused. (The
output directory is --dir, not -o: -o is every command's output format.)

Exit status 1 when a registry or a repository could not be read; the site is
still written with every bundle that could.`,
		Example: `  kfm catalog build --registry registry.example.com/net --dir public/
  kfm catalog build --registry localhost:5000/kfm --registry ghcr.io/example/ebpf --dir /tmp/site -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nss, err := parseNamespaces(registries)
			if err != nil {
				return err
			}
			if dir == "" {
				return usageErrorf("catalog build needs --dir DIR: where to write the site")
			}
			c, err := g.registryClient(ctx, &rf, false)
			if err != nil {
				return err
			}
			checker, err := g.loadChecker(ctx, c, policyPath)
			if err != nil {
				return err
			}
			res := catalogBuildResult{Dir: dir, Bundles: []string{}}
			var refs []registry.Reference
			seen := map[string]bool{}
			var names []string
			failed := 0
			for _, ns := range nss {
				names = append(names, ns.String())
				l, err := catalog.List(ctx, c, ns, catalog.Options{Live: true})
				if err != nil {
					failed++
					fmt.Fprintf(g.err, "kfm: %s: %v\n", ns, err)
					res.Problems = append(res.Problems, catalog.Problem{Repository: ns.String(), Error: err.Error()})
					continue
				}
				res.Problems = append(res.Problems, l.Problems...)
				for _, b := range l.Bundles {
					if !seen[b.Repository] {
						seen[b.Repository] = true
						refs = append(refs, b.Ref())
					}
				}
			}
			pages := make([]*catalog.Page, len(refs))
			var mu sync.Mutex
			eg, ectx := errgroup.WithContext(ctx)
			eg.SetLimit(4)
			for i, ref := range refs {
				eg.Go(func() error {
					ref.Digest = ""
					p, err := catalog.ReadPage(ectx, c, ref, false, checker, catalog.Options{})
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						res.Problems = append(res.Problems, catalog.Problem{Repository: ref.Repo(), Error: err.Error()})
						return nil
					}
					pages[i] = p
					return nil
				})
			}
			_ = eg.Wait()
			var ok []*catalog.Page
			for _, p := range pages {
				if p != nil {
					ok = append(ok, p)
					res.Bundles = append(res.Bundles, p.Repository)
				}
			}
			for _, p := range res.Problems {
				fmt.Fprintf(g.err, "kfm: warning: %s: %s\n", p.Repository, p.Error)
			}
			siteOpts := site.Options{Title: title, Namespaces: names,
				Capabilities: func(_ *catalog.Page, p *registry.ProgramConfig) ([]string, bool) { return capabilitiesOf(p) },
			}
			if err := site.Build(dir, ok, siteOpts); err != nil {
				return err
			}
			if err := g.report(res, func(w io.Writer) error {
				fmt.Fprintf(w, "%s: %d bundle page(s), open %s/index.html\n", dir, len(ok), dir)
				return nil
			}); err != nil {
				return err
			}
			if len(res.Problems) > 0 || failed > 0 {
				return fmt.Errorf("the site lacks what could not be read (%d problem(s), see above)", len(res.Problems))
			}
			return nil
		},
	}
	rf.add(cmd, false)
	f := cmd.Flags()
	f.StringArrayVar(&registries, "registry", nil, "registry namespace to include, HOST/NAMESPACE (repeatable)")
	f.StringVarP(&dir, "dir", "d", "", "directory to write the site into")
	f.StringVar(&policyPath, "policy", "", "trust policy to check signatures against (default <config-dir>/policy.yaml)")
	f.StringVar(&title, "title", "kfm catalog", "title of the site")
	return cmd
}
