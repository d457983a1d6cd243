package registry_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// testObject is a real BPF object: two XDP programs (one with libxdp
// XDP_RUN_CONFIG metadata), one TC program, params of every kind, a map.
const testObject = "../bpf/testdata/params.o"

func readObject(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(testObject)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

const testBundleYAML = `
name: params-demo
version: 1.0.0
description: test bundle
license: GPL-2.0-only OR BSD-2-Clause
source: https://example.com/kfm/params
programs:
  - function: with_config
    hooks: [xdp]
    params:
      - name: p_u32
        description: key looked up in the seen map
  - function: tc_prog
    hooks: [tc-ingress]
    priority: 7
    proceedOn: [ok, shot]
`

func pack(t testing.TB, opts registry.PackOptions) *registry.Bundle {
	t.Helper()
	if opts.BundleFile == nil {
		bf, err := registry.ParseBundleFile([]byte(testBundleYAML))
		if err != nil {
			t.Fatal(err)
		}
		opts.BundleFile = bf
	}
	if opts.ObjectName == "" {
		opts.ObjectName = "params.o"
	}
	b, err := registry.Pack(readObject(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// creds is a credential store holding r's user, as `kfm login` would.
func creds(t testing.TB, r *testregistry.Registry) credentials.Store {
	t.Helper()
	s := credentials.NewMemoryStore()
	if r != nil && r.Username() != "" {
		if err := s.Put(context.Background(), r.Host(), auth.Credential{Username: r.Username(), Password: r.Password()}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// newClient returns a client with its own cache that trusts r's CA and
// holds r's credentials.
func newClient(t testing.TB, r *testregistry.Registry, mod ...func(*registry.Options)) *registry.Client {
	t.Helper()
	c, err := cache.Open(context.Background(), filepath.Join(t.TempDir(), "oci"))
	if err != nil {
		t.Fatal(err)
	}
	opts := registry.Options{Cache: c, Credentials: creds(t, r)}
	if r != nil {
		opts.CAFile = r.CAFile()
	}
	for _, m := range mod {
		m(&opts)
	}
	cl, err := registry.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func mustRef(t testing.TB, s string) registry.Reference {
	t.Helper()
	ref, err := registry.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// publish packs the test object and pushes it to r as repo:tag.
func publish(t testing.TB, r *testregistry.Registry, repo, tag string, opts registry.PackOptions) (*registry.Bundle, registry.Reference) {
	t.Helper()
	b := pack(t, opts)
	pinned, err := newClient(t, r).Publish(context.Background(), b, mustRef(t, r.Ref(repo, tag)))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return b, pinned
}

// cacheFiles lists the blob files of a cache directory.
func cacheBlobs(t testing.TB, c *cache.Cache) []string {
	t.Helper()
	var out []string
	root := filepath.Join(c.Dir(), "blobs")
	_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func authCred(user, pass string) auth.Credential {
	return auth.Credential{Username: user, Password: pass}
}

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

func cacheOpen(dir string) (*cache.Cache, error) { return cache.Open(context.Background(), dir) }

// exampleTB is the testing.TB the Example functions give testregistry;
// cleanup runs what it registered.
type exampleTB struct {
	testing.TB
	cleanups []func()
	dirs     []string
}

func (e *exampleTB) Helper()          {}
func (e *exampleTB) Cleanup(f func()) { e.cleanups = append(e.cleanups, f) }
func (e *exampleTB) TempDir() string {
	d, err := os.MkdirTemp("", "kfm-example")
	if err != nil {
		panic(err)
	}
	e.dirs = append(e.dirs, d)
	return d
}
func (e *exampleTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (e *exampleTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (e *exampleTB) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	for _, d := range e.dirs {
		os.RemoveAll(d)
	}
}
