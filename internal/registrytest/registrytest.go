// Package registrytest starts a CNCF Distribution v3 registry in-process on
// 127.0.0.1 for the tests of package verify and of kfm sign/verify.
//
// It is a minimal stand-in until internal/testregistry (the registry work)
// lands on main; then the tests switch to that and this package goes away.
package registrytest

import (
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the storage driver
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// Registry is a running registry.
type Registry struct {
	// Host is "127.0.0.1:PORT".
	Host string
	// Dir is the storage root on disk.
	Dir string
	srv *httptest.Server
}

// Start starts a registry storing under a temporary directory; it stops when
// the test ends.
func Start(tb testing.TB) *Registry {
	tb.Helper()
	logrus.SetOutput(io.Discard)
	dir := tb.TempDir()
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": dir},
			"delete":     configuration.Parameters{"enabled": true},
		},
	}
	cfg.HTTP.Secret = "kfm-test"
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	srv := httptest.NewServer(app)
	tb.Cleanup(func() {
		srv.Close()
		cancel()
	})
	return &Registry{Host: strings.TrimPrefix(srv.URL, "http://"), Dir: dir, srv: srv}
}

// Stop stops the registry now (to prove that something works offline).
func (r *Registry) Stop() { r.srv.Close() }

// BlobPath is where the registry keeps the bytes of blob d on disk: tests
// overwrite it to play an attacker with access to the registry's storage.
func (r *Registry) BlobPath(d digest.Digest) string {
	hex := d.Encoded()
	return filepath.Join(r.Dir, "docker", "registry", "v2", "blobs", string(d.Algorithm()), hex[:2], hex, "data")
}

// Tamper overwrites the stored bytes of blob d with data of the same length
// (so that only the digest check can notice).
func (r *Registry) Tamper(tb testing.TB, d digest.Digest) {
	tb.Helper()
	p := r.BlobPath(d)
	data, err := os.ReadFile(p)
	if err != nil {
		tb.Fatalf("tamper %s: %v", d, err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}
