package catalog_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
)

// BenchmarkList lists a namespace of 50 bundles on a local registry, through
// the catalog API (tags and config of every repository, 8 at a time) and
// through the index artifact (one manifest and one blob).
func BenchmarkList(b *testing.B) {
	ctx := context.Background()
	r := testregistry.Start(b, testregistry.Options{})
	c, err := registry.NewClient(registry.Options{Credentials: credentials.NewMemoryStore()})
	if err != nil {
		b.Fatal(err)
	}
	obj, err := os.ReadFile("../../examples/programs/xdp_count.o")
	if err != nil {
		b.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("net/p%02d", i)
		bd, err := registry.Pack(obj, registry.PackOptions{Name: name, Version: "1.0.0", ObjectName: "xdp_count.o"})
		if err != nil {
			b.Fatal(err)
		}
		ref, _ := registry.ParseReference(r.Ref(name, "1.0.0"))
		if _, err := c.Publish(ctx, bd, ref); err != nil {
			b.Fatal(err)
		}
	}
	ns, _ := catalog.ParseNamespace(r.Host() + "/net")
	b.Run("catalog-api", func(b *testing.B) {
		for b.Loop() {
			l, err := catalog.List(ctx, c, ns, catalog.Options{NoIndex: true})
			if err != nil || len(l.Bundles) != n {
				b.Fatalf("%v, %d bundles", err, len(l.Bundles))
			}
		}
	})
	l, err := catalog.List(ctx, c, ns, catalog.Options{NoIndex: true})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := catalog.PublishIndex(ctx, c, ns, l.Bundles, time.Unix(0, 0)); err != nil {
		b.Fatal(err)
	}
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			l, err := catalog.List(ctx, c, ns, catalog.Options{})
			if err != nil || len(l.Bundles) != n || l.From != "index" {
				b.Fatalf("%v, %+v", err, l)
			}
		}
	})
}
