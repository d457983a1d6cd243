package registry_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// exampleRegistry starts the in-process test registry for the examples.
func exampleRegistry() (*testregistry.Registry, func()) {
	tb := &exampleTB{}
	return testregistry.Start(tb, testregistry.Options{}), tb.cleanup
}

func ExamplePack() {
	object, err := os.ReadFile("../bpf/testdata/params.o")
	if err != nil {
		panic(err)
	}
	bf, err := registry.ParseBundleFile([]byte("name: params-demo\nversion: 1.0.0\nprograms:\n  - function: tc_prog\n    hooks: [tc-ingress]\n"))
	if err != nil {
		panic(err)
	}
	// Created is left zero: the epoch, as with SOURCE_DATE_EPOCH unset.
	b, err := registry.Pack(object, registry.PackOptions{BundleFile: bf, ObjectName: "params.o"})
	if err != nil {
		panic(err)
	}
	for _, p := range b.Config.Programs {
		fmt.Println(p.Function, p.Type, p.Hooks, p.Priority, p.ProceedOn)
	}
	fmt.Println(b.Manifest.ArtifactType)
	// Output:
	// tc_prog sched_cls [tc-ingress] 50 [ok]
	// with_config xdp [xdp] 20 [drop pass]
	// without_config xdp [xdp] 50 [pass]
	// application/vnd.kfm.bundle.v1
}

func ExampleParseReference() {
	ref, err := registry.ParseReference("registry.example.com/net/ratelimit:1.2.0")
	if err != nil {
		panic(err)
	}
	fmt.Println(ref.Registry, ref.Repository, ref.Tag, ref.IsPinned())
	ref, _ = registry.ParseReference("localhost:5000/net/ratelimit")
	fmt.Println(ref)
	_, err = registry.ParseReference("net/ratelimit:1.2.0")
	fmt.Println(err != nil)
	// Output:
	// registry.example.com net/ratelimit 1.2.0 false
	// localhost:5000/net/ratelimit:latest
	// true
}

// Publishing and pulling in the steps that install and signature
// verification use.
func ExampleClient_Resolve() {
	ctx := context.Background()
	r, stop := exampleRegistry()
	defer stop()

	object, _ := os.ReadFile("../bpf/testdata/params.o")
	b, err := registry.Pack(object, registry.PackOptions{Name: "params-demo", ObjectName: "params.o"})
	if err != nil {
		panic(err)
	}
	dir, _ := os.MkdirTemp("", "kfm-example")
	defer os.RemoveAll(dir)
	c, err := cache.Open(ctx, filepath.Join(dir, "oci"))
	if err != nil {
		panic(err)
	}
	// Credentials default to the Docker store; this registry needs none.
	client, err := registry.NewClient(registry.Options{Cache: c})
	if err != nil {
		panic(err)
	}
	ref, _ := registry.ParseReference(r.Ref("net/params", "1.0.0"))
	published, err := client.Publish(ctx, b, ref)
	if err != nil {
		panic(err)
	}

	pinned, desc, err := client.Resolve(ctx, ref, registry.PullOptions{}) // the tag, resolved once
	if err != nil {
		panic(err)
	}
	if err := client.Fetch(ctx, pinned, desc, registry.PullOptions{}); err != nil { // by digest
		panic(err)
	}
	// ... verify the signatures of pinned.Digest ...
	bundle, err := client.Open(ctx, pinned) // from the cache, by digest
	if err != nil {
		panic(err)
	}
	fmt.Println(pinned.Digest == published.Digest, bundle.Config.Name, len(bundle.Object) == len(object))
	// Output: true params-demo true
}
