package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// registryFlags are the flags of commands that talk to registries.
type registryFlags struct {
	plainHTTP bool
	caFile    string
	offline   bool
	retries   int
	timeout   time.Duration
}

func (f *registryFlags) add(cmd *cobra.Command, offline bool) {
	fl := cmd.Flags()
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "talk HTTP instead of HTTPS to the registry (loopback registries without TLS need no flag)")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM file of a CA to trust for the registry's TLS certificate")
	fl.IntVar(&f.retries, "registry-attempts", registry.DefaultRetryPolicy.Attempts, "how many times each registry request is tried (5xx, 429, broken or stalled transfers are retried with backoff; TLS errors are not)")
	fl.DurationVar(&f.timeout, "registry-timeout", registry.DefaultRetryPolicy.Timeout, "bound on each registry operation (resolve, fetch a bundle, fetch its signatures), retries and waits included")
	if offline {
		fl.BoolVar(&f.offline, "offline", false, "use only the local cache (--cache-dir); a tag resolves to the digest it was last pulled at")
	}
}

// client makes a registry client; withCache opens <cache-dir>/oci.
func (g *globals) registryClient(ctx context.Context, f *registryFlags, withCache bool) (*registry.Client, error) {
	if f.retries < 1 {
		return nil, usageErrorf("--registry-attempts %d: at least 1 try", f.retries)
	}
	if f.timeout <= 0 {
		return nil, usageErrorf("--registry-timeout %s: must be positive", f.timeout)
	}
	opts := registry.Options{PlainHTTP: f.plainHTTP, CAFile: f.caFile, Retry: registry.RetryPolicy{Attempts: f.retries, Timeout: f.timeout}}
	if withCache {
		c, err := cache.Open(ctx, filepath.Join(g.cacheDir, "oci"))
		if err != nil {
			return nil, err
		}
		opts.Cache = c
	}
	return registry.NewClient(opts)
}

// parseRef parses a reference; a malformed one is a usage error.
func parseRef(s string) (registry.Reference, error) {
	ref, err := registry.ParseReference(s)
	if err != nil {
		return registry.Reference{}, usageError{err}
	}
	return ref, nil
}

// isTerminal reports whether w is a terminal (progress bars go only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// registryError marks a malformed reference as a usage error.
func registryError(err error) error {
	if errors.Is(err, registry.ErrInvalidReference) {
		return usageError{err}
	}
	return err
}
