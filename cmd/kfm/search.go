package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/registry/catalog"
)

// searchedRegistry is how one --registry fared.
type searchedRegistry struct {
	Namespace   string            `json:"namespace"`
	From        string            `json:"from,omitempty"`
	IndexDigest string            `json:"indexDigest,omitempty"`
	Problems    []catalog.Problem `json:"problems,omitempty"`
	Error       string            `json:"error,omitempty"`
}

type searchOutput struct {
	Results    []catalog.Result   `json:"results"`
	Registries []searchedRegistry `json:"registries"`
}

// searchFailed: results were printed, but a registry could not be searched
// (exit status 1).
type searchFailed struct{ n int }

func (e searchFailed) Error() string {
	return fmt.Sprintf("%d registr%s could not be searched (see above); the results are incomplete", e.n, map[bool]string{true: "y", false: "ies"}[e.n == 1])
}

func newSearchCommand(g *globals) *cobra.Command {
	var (
		rf         registryFlags
		registries []string
		policyPath string
		workers    int
	)
	cmd := &cobra.Command{
		Use:   "search [TERM...] --registry HOST/NAMESPACE [--registry ...]",
		Short: "Find bundles in registries by name, description, keyword or category",
		Long: `search lists the bundles of one or more registry namespaces that match every
TERM (case-insensitive, anywhere in the name, repository, description,
keywords or categories; no TERM lists everything). One line per bundle: its
repository, latest version, hooks, who signed the latest version as the local
trust policy sees it (--policy, default <config-dir>/policy.yaml; without a
policy signatures are not checked), and its description.

Bundles are found through the namespace's catalog index artifact
(HOST/NAMESPACE/kfm-catalog:latest, written by kfm catalog publish) when it
has one, else through the registry's catalog API (/v2/_catalog) and each
repository's tags. The latest version is the highest semver tag (releases
before pre-releases), else the tag "latest". Only manifests and configs are
read, never objects, at most --concurrency at a time.

Exit status: 0 when every registry was searched, also when nothing matched
(then the output is empty, "[]" results with -o json, and a note goes to
stderr, as with npm search); 1 when a registry could not be searched (the
results of the others are still printed); 2 usage errors. Unsigned and
refused bundles are listed as such; they are no error here.`,
		Example: `  kfm search ratelimit --registry registry.example.com/net
  kfm search --registry ghcr.io/example/ebpf --registry localhost:5000/kfm -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nss, err := parseNamespaces(registries)
			if err != nil {
				return err
			}
			c, err := g.registryClient(ctx, &rf, false)
			if err != nil {
				return err
			}
			checker, err := g.loadChecker(ctx, c, policyPath)
			if err != nil {
				return err
			}
			opts := catalog.Options{Concurrency: workers}
			out := searchOutput{Registries: []searchedRegistry{}}
			var listings []*catalog.Listing
			failed := 0
			for _, ns := range nss {
				sr := searchedRegistry{Namespace: ns.String()}
				l, err := catalog.List(ctx, c, ns, opts)
				if err != nil {
					sr.Error = err.Error()
					failed++
					fmt.Fprintf(g.err, "kfm: %s: %v\n", ns, err)
				} else {
					listings = append(listings, l)
					sr.From, sr.IndexDigest, sr.Problems = l.From, l.IndexDigest.String(), l.Problems
					for _, p := range l.Problems {
						fmt.Fprintf(g.err, "kfm: warning: %s: %s\n", p.Repository, p.Error)
					}
				}
				out.Registries = append(out.Registries, sr)
			}
			out.Results = catalog.Search(ctx, listings, args, checker, opts)
			if len(out.Results) == 0 && failed < len(nss) {
				fmt.Fprintf(g.err, "No bundles match %q.\n", strings.Join(args, " "))
			}
			if err := g.report(out, func(w io.Writer) error { return printSearch(w, out.Results) }); err != nil {
				return err
			}
			if failed > 0 {
				return searchFailed{failed}
			}
			return nil
		},
	}
	rf.add(cmd, false)
	f := cmd.Flags()
	f.StringArrayVar(&registries, "registry", nil, "registry namespace to search, HOST/NAMESPACE (repeatable)")
	f.StringVar(&policyPath, "policy", "", "trust policy to check signatures against (default <config-dir>/policy.yaml)")
	f.IntVar(&workers, "concurrency", 8, "repositories read at once per registry")
	return cmd
}

func printSearch(w io.Writer, rs []catalog.Result) error {
	if len(rs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tHOOKS\tSIGNED\tDESCRIPTION")
	for _, r := range rs {
		desc := ""
		if r.Config != nil {
			desc = r.Config.Description
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, oneLine(r.Latest, 24), orDash(strings.Join(r.Hooks(), ",")), oneLine(shortTrustText(r.Trust), 64), orDash(oneLine(desc, 72)))
	}
	return tw.Flush()
}
