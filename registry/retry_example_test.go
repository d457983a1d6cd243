package registry_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/internal/faultproxy"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// A client that tries each request three times and spends at most 30
// seconds per operation, pulling through a registry that answers 503 on
// every blob: the error says who failed, how often and what to do.
func ExampleRetryPolicy() {
	tb := &exampleTB{}
	defer tb.cleanup()
	reg, stop := exampleRegistry()
	defer stop()
	object, err := os.ReadFile("../bpf/testdata/params.o")
	if err != nil {
		panic(err)
	}
	bf, err := registry.ParseBundleFile([]byte("name: params\nversion: 1.0.0\nprograms:\n  - function: tc_prog\n    hooks: [tc-ingress]\n"))
	if err != nil {
		panic(err)
	}
	b, err := registry.Pack(object, registry.PackOptions{BundleFile: bf, ObjectName: "params.o"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	pub, err := registry.NewClient(registry.Options{Credentials: credentials.NewMemoryStore()})
	if err != nil {
		panic(err)
	}
	if _, err := pub.Publish(ctx, b, exampleRef(reg.Ref("net/params", "1.0.0"))); err != nil {
		panic(err)
	}

	proxy := faultproxy.Start(tb, reg.Host(), faultproxy.Options{})
	proxy.Add(faultproxy.Rule{Method: "GET", Path: faultproxy.Blobs, Fault: faultproxy.Status(503)})
	c, err := cache.Open(ctx, filepath.Join(tb.TempDir(), "oci"))
	if err != nil {
		panic(err)
	}
	client, err := registry.NewClient(registry.Options{
		Cache:       c,
		Credentials: credentials.NewMemoryStore(),
		Retry:       registry.RetryPolicy{Attempts: 3, Timeout: 30 * time.Second, Backoff: time.Millisecond},
	})
	if err != nil {
		panic(err)
	}
	_, err = client.Pull(ctx, exampleRef(proxy.Host()+"/net/params:1.0.0"), registry.PullOptions{})
	var re *registry.RetryError
	if errors.As(err, &re) {
		fmt.Println(errors.Is(err, registry.ErrUnavailable), re.Tries, re.Status, re.Host == proxy.Host())
	}
	// Output: true 3 503 true
}

func exampleRef(s string) registry.Reference {
	ref, err := registry.ParseReference(s)
	if err != nil {
		panic(err)
	}
	return ref
}
