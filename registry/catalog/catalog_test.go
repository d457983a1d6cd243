package catalog_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
)

func TestVersions(t *testing.T) {
	for _, tc := range []struct {
		tags          string
		order, latest string
	}{
		{"1.0.0 1.10.0 1.2.0", "1.10.0 1.2.0 1.0.0", "1.10.0"},
		{"1.0.0 2.0.0-rc.1 v1.1.0", "2.0.0-rc.1 v1.1.0 1.0.0", "v1.1.0"},
		{"2.0.0-rc.1 2.0.0-beta", "2.0.0-rc.1 2.0.0-beta", "2.0.0-rc.1"},
		{"main latest dev sha256-abc.sig", "latest main dev", "latest"},
		{"main dev", "main dev", "main"},
		{"1.0.0 latest 1.2 sha256-0123.sig", "1.0.0 latest 1.2", "1.0.0"},
		{"sha256-0123.sig", "", ""},
	} {
		got := catalog.Versions(strings.Fields(tc.tags))
		if strings.Join(got, " ") != tc.order || catalog.Latest(got) != tc.latest {
			t.Errorf("Versions(%s) = %v, latest %q; want %s, %q", tc.tags, got, catalog.Latest(got), tc.order, tc.latest)
		}
	}
}

func TestMatch(t *testing.T) {
	b := &catalog.Bundle{Repository: "r.example/net/xdp-ratelimit", Config: &registry.Config{
		Name: "xdp-ratelimit", Description: "Drops packets above a rate", Keywords: []string{"token-bucket"}, Categories: []string{"ratelimit", "ddos"},
	}}
	for _, tc := range []struct {
		terms string
		ok    bool
	}{
		{"", true}, {"RATELIMIT", true}, {"token", true}, {"ddos", true}, {"drops", true},
		{"rate ddos", true}, {"rate firewall", false}, {"net/xdp", true}, {"icmp", false},
	} {
		if _, ok := catalog.Match(b, strings.Fields(tc.terms)); ok != tc.ok {
			t.Errorf("Match(%q) = %v, want %v", tc.terms, ok, tc.ok)
		}
	}
	name, _ := catalog.Match(b, []string{"xdp-ratelimit"})
	desc, _ := catalog.Match(b, []string{"above"})
	if name <= desc {
		t.Errorf("a name match scores %d, a description match %d", name, desc)
	}
}

func TestParseNamespace(t *testing.T) {
	for in, want := range map[string]string{
		"r.example.com/net": "r.example.com/net", "localhost:5000/a/b/": "localhost:5000/a/b", "ghcr.io": "ghcr.io",
	} {
		ns, err := catalog.ParseNamespace(in)
		if err != nil || ns.String() != want {
			t.Errorf("ParseNamespace(%q) = %v, %v", in, ns, err)
		}
	}
	for _, bad := range []string{"", "/x", "net/UPPER CASE", "noport/x"} {
		if _, err := catalog.ParseNamespace(bad); !errors.Is(err, catalog.ErrInvalidNamespace) {
			t.Errorf("ParseNamespace(%q): %v", bad, err)
		}
	}
	ns, _ := catalog.ParseNamespace("r.example.com/net")
	if got := ns.IndexRef().String(); got != "r.example.com/net/kfm-catalog:latest" {
		t.Errorf("IndexRef: %s", got)
	}
}

func TestParseIndex(t *testing.T) {
	for name, doc := range map[string]string{
		"version":   `{"schemaVersion":2,"namespace":"r.example/net","bundles":[]}`,
		"outside":   `{"schemaVersion":1,"namespace":"r.example/net","bundles":[{"repository":"r.example/other/x","latest":"1.0.0","descriptor":{"digest":"sha256:` + strings.Repeat("a", 64) + `"},"config":{}}]}`,
		"no config": `{"schemaVersion":1,"namespace":"r.example/net","bundles":[{"repository":"r.example/net/x","latest":"1.0.0","descriptor":{"digest":"sha256:` + strings.Repeat("a", 64) + `"}}]}`,
		"not json":  `[`,
	} {
		if _, err := catalog.ParseIndex([]byte(doc)); !errors.Is(err, registry.ErrInvalidBundle) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// List on a real registry: the catalog API across pages, restricted to the
// namespace, non-bundles skipped; on a registry that refuses the catalog, a
// clear ErrNoCatalog until an index is published, then the index.
func TestList(t *testing.T) {
	ctx := context.Background()
	open := testregistry.Start(t, testregistry.Options{CatalogPageSize: 1})
	closed := testregistry.Start(t, testregistry.Options{RefuseCatalog: 401})
	c, err := registry.NewClient(registry.Options{Credentials: credentials.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := os.ReadFile("../../examples/programs/xdp_count.o")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(r *testregistry.Registry, repo, tag string) {
		t.Helper()
		b, err := registry.Pack(obj, registry.PackOptions{Name: repo, Version: tag, ObjectName: "xdp_count.o"})
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := registry.ParseReference(r.Ref(repo, tag))
		if _, err := c.Publish(ctx, b, ref); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*testregistry.Registry{open, closed} {
		publish(r, "net/a", "1.0.0")
		publish(r, "net/b", "0.1.0")
		publish(r, "net/b", "0.2.0")
		publish(r, "other/c", "1.0.0")
	}
	// Something that is no bundle: skipped.
	if _, err := c.PushArtifact(ctx, mustRef(t, open.Ref("net/notes", "1.0.0")), "text/plain", "text/plain", "notes.txt", []byte("hi"), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	ns, _ := catalog.ParseNamespace(open.Host() + "/net")
	l, err := catalog.List(ctx, c, ns, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if l.From != "catalog" || len(l.Bundles) != 2 || l.Bundles[1].Latest != "0.2.0" || len(l.Problems) != 0 {
		t.Fatalf("open registry: %+v", l)
	}

	cns, _ := catalog.ParseNamespace(closed.Host() + "/net")
	if _, err := catalog.List(ctx, c, cns, catalog.Options{}); !errors.Is(err, catalog.ErrNoCatalog) || !strings.Contains(err.Error(), "kfm catalog publish") {
		t.Fatalf("closed registry without index: %v", err)
	}
	bundles, problems := catalog.Read(ctx, c, closed.Host(), []string{"net/a", "net/b"}, catalog.Options{})
	if len(bundles) != 2 || len(problems) != 0 {
		t.Fatalf("Read: %+v %+v", bundles, problems)
	}
	ref1, err := catalog.PublishIndex(ctx, c, cns, bundles, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	ref2, err := catalog.PublishIndex(ctx, c, cns, []catalog.Bundle{bundles[1], bundles[0]}, time.Unix(0, 0))
	if err != nil || ref1.Digest != ref2.Digest {
		t.Errorf("the same bundles give index digests %s and %s (%v)", ref1.Digest, ref2.Digest, err)
	}
	l, err = catalog.List(ctx, c, cns, catalog.Options{})
	if err != nil || l.From != "index" || l.IndexDigest != ref1.Digest || len(l.Bundles) != 2 || l.Bundles[0].Config.Name != "net/a" {
		t.Fatalf("closed registry with index: %v %+v", err, l)
	}
	// Live: the index names the repositories, the registry says the rest.
	publish(closed, "net/b", "0.3.0")
	l, err = catalog.List(ctx, c, cns, catalog.Options{Live: true})
	if err != nil || l.Bundles[1].Latest != "0.3.0" {
		t.Fatalf("live listing: %v %+v", err, l)
	}
}

func mustRef(t *testing.T, s string) registry.Reference {
	t.Helper()
	r, err := registry.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
