package site

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/registry/catalog"
)

// FuzzSlugs: the site names a page's file after its repository, a name
// the registry chooses. Whatever the names (one a line here), every file
// name is distinct, non-empty, and stays in the site directory.
func FuzzSlugs(f *testing.F) {
	f.Add("r.example/net/ratelimit\nr.example/net/RateLimit\nr.example/net/ratelimit-2\n../../etc/passwd\n.\n\n..")
	f.Fuzz(func(t *testing.T, repos string) {
		var pages []*catalog.Page
		for _, r := range strings.Split(repos, "\n") {
			pages = append(pages, &catalog.Page{Repository: r})
		}
		seen := map[string]bool{}
		for i, s := range slugsFor(pages) {
			if s == "" || seen[s] || s != filepath.Base(s) || s == "." || s == ".." || strings.ContainsAny(s, `/\`) {
				t.Fatalf("repository %q: file name %q (empty, repeated or leaving the directory)", pages[i].Repository, s)
			}
			seen[s] = true
		}
	})
}
