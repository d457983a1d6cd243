package catalog_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
)

// FuzzParseIndex: an index from a registry never panics; errors wrap
// ErrInvalidBundle; what parses lies inside its namespace.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":1,"namespace":"r.example/net","bundles":[]}`))
	f.Add([]byte(`{"schemaVersion":1,"namespace":"r.example/net","bundles":[{"repository":"r.example/net/x","latest":"1.0.0","descriptor":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"config":{"name":"x"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := catalog.ParseIndex(data)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalidBundle) {
				t.Fatalf("error without ErrInvalidBundle: %v", err)
			}
			return
		}
		for _, b := range idx.Bundles {
			if b.Config == nil || b.Latest == "" {
				t.Fatalf("incomplete bundle accepted: %+v", b)
			}
		}
	})
}

// FuzzParseNamespace: a namespace a user or a catalog config names is
// parsed or refused with ErrInvalidNamespace; a parsed one formats to a
// string that parses to the same namespace.
func FuzzParseNamespace(f *testing.F) {
	for _, s := range []string{"registry.example.com/net", "localhost:5000", "r.example/a/b/", "/x", "[::1]:5000/n", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ns, err := catalog.ParseNamespace(s)
		if err != nil {
			if !errors.Is(err, catalog.ErrInvalidNamespace) {
				t.Fatalf("refusal does not wrap ErrInvalidNamespace: %v", err)
			}
			return
		}
		again, err := catalog.ParseNamespace(ns.String())
		if err != nil || again != ns {
			t.Fatalf("%q -> %q -> %#v, %v", s, ns.String(), again, err)
		}
	})
}

// FuzzVersions: the tag list a registry returns (one tag a line here) is
// ordered without a panic, the same whatever order the registry listed it
// in; every version is one of the tags, and Latest is one of the versions.
func FuzzVersions(f *testing.F) {
	f.Add("1.0.0\n1.2.0\nv1.10.0-rc.1\nlatest\nsha256-abc.sig\nmain\n2.0.0+build\n1.2")
	f.Add("0.0.0\n00.1.0\n1.0.0-\n1.0.0-01\nv\n")
	f.Fuzz(func(t *testing.T, s string) {
		tags := strings.Split(s, "\n")
		got := catalog.Versions(tags)
		rev := slices.Clone(tags)
		slices.Reverse(rev)
		if again := catalog.Versions(rev); !slices.Equal(got, again) {
			t.Fatalf("order depends on the listing:\n%q\n%q", got, again)
		}
		for _, v := range got {
			if !slices.Contains(tags, v) {
				t.Fatalf("version %q is no tag", v)
			}
		}
		if l := catalog.Latest(got); l != "" && !slices.Contains(got, l) {
			t.Fatalf("latest %q is not a version", l)
		} else if l == "" && len(got) > 0 {
			t.Fatalf("no latest of %q", got)
		}
	})
}
