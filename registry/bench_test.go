package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
)

// BenchmarkPull10 pulls 10 bundles from a local registry (plain HTTP on
// 127.0.0.1), cold (empty cache) and warm (everything cached, tags still
// resolved at the registry), with kfm (one client, PullAll, concurrent, and
// for comparison one at a time) and with the oras CLI (one `oras pull` per bundle, one after the other; warm
// means its blob cache ORAS_CACHE is filled). Every kfm iteration uses a new
// client, as a new kfm process would. Compare ns/op of the kfm and oras
// sub-benchmarks of the same run.
func BenchmarkPull10(b *testing.B) {
	ctx := context.Background()
	r := testregistry.Start(b, testregistry.Options{})
	var refs []registry.Reference
	for i := range 10 {
		name := fmt.Sprintf("bundle-%d", i)
		publish(b, r, "bench/"+name, "1.0.0", registry.PackOptions{Name: name})
		refs = append(refs, mustRef(b, r.Ref("bench/"+name, "1.0.0")))
	}
	want := readObject(b)

	kfmPull := func(b *testing.B, cacheDir string, concurrency int) {
		c := newClient(b, r, func(o *registry.Options) {
			cc, err := cacheOpen(cacheDir)
			if err != nil {
				b.Fatal(err)
			}
			o.Cache = cc
			o.Concurrency = concurrency
		})
		bs, err := c.PullAll(ctx, refs, registry.PullOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(bs[9].Object, want) {
			b.Fatal("wrong object")
		}
	}
	// kfm: the default (8 transfers at once), and one at a time to show
	// what concurrency buys.
	for _, k := range []struct {
		name        string
		concurrency int
	}{{"kfm", 8}, {"kfm-serial", 1}} {
		b.Run("cold/"+k.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "oci")
				b.StartTimer()
				kfmPull(b, dir, k.concurrency)
			}
		})
		b.Run("warm/"+k.name, func(b *testing.B) {
			dir := filepath.Join(b.TempDir(), "oci")
			kfmPull(b, dir, k.concurrency)
			for b.Loop() {
				kfmPull(b, dir, k.concurrency)
			}
		})
	}

	orasPull := func(b *testing.B, o *orasCLI, out string) {
		for _, ref := range refs {
			o.run(b, out, "", "pull", ref.String(), "-o", out, "--plain-http", "--no-tty")
		}
		got, err := os.ReadFile(filepath.Join(out, "params.o"))
		if err != nil || !bytes.Equal(got, want) {
			b.Fatalf("oras pulled %d bytes, %v", len(got), err)
		}
	}
	b.Run("cold/oras", func(b *testing.B) {
		o := newOras(b)
		for b.Loop() {
			b.StopTimer()
			out := b.TempDir()
			b.StartTimer()
			orasPull(b, o, out)
		}
	})
	b.Run("warm/oras", func(b *testing.B) {
		o := newOras(b)
		o.env = append(o.env, "ORAS_CACHE="+b.TempDir())
		out := b.TempDir()
		orasPull(b, o, out)
		for b.Loop() {
			orasPull(b, o, out)
		}
	})
}
