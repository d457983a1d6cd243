package main

// Registry access for kfm sign and kfm verify.
//
// TEMPORARY: this mirrors the registry package's Client (branch registry:
// credentials from the Docker store, plain HTTP only for loopback registries
// that do not speak TLS or with --plain-http, --ca-file, loopback token realms
// allowed for loopback registries only) until that package lands on main;
// then sigRepository becomes registry.NewClient(...).Repository(ctx, ref) and
// this file goes away.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// sigRegistryFlags are the registry flags of kfm sign and kfm verify.
type sigRegistryFlags struct {
	plainHTTP bool
	caFile    string
}

func (f *sigRegistryFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.plainHTTP, "plain-http", false, "talk HTTP, not HTTPS, to the registry (automatic for loopback registries without TLS)")
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "PEM file of extra certificate authorities for registries with a private CA")
}

// sigRepository opens the repository of ref.
func (f *sigRegistryFlags) repository(ctx context.Context, ref registry.Reference) (*remote.Repository, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if f.caFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", f.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	hc := &http.Client{Transport: retry.NewTransport(tr)}
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{AllowPlaintextPut: true, DetectDefaultNativeStore: true})
	if err != nil {
		return nil, fmt.Errorf("docker credential store: %w", err)
	}
	ac := &auth.Client{
		Client:     hc,
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
		Header:     http.Header{"User-Agent": {"kfm"}},
		ClientID:   "kfm",
	}
	plain := f.plainHTTP
	if isLoopbackHost(ref.Registry) {
		var blocked []netip.Prefix
		for _, p := range auth.DefaultBlockedRealmPrefixes() {
			if !p.Addr().IsLoopback() {
				blocked = append(blocked, p)
			}
		}
		ac.BlockedRealmPrefixes = blocked
		if !plain {
			if plain, err = speaksPlainHTTP(ctx, hc, ref.Registry); err != nil {
				return nil, fmt.Errorf("registry %s: %w", ref.Registry, err)
			}
		}
	}
	repo := &remote.Repository{Client: ac, Reference: ref, PlainHTTP: plain, MaxMetadataBytes: 4 << 20}
	return repo, nil
}

// speaksPlainHTTP probes whether a loopback registry answers TLS.
func speaksPlainHTTP(ctx context.Context, hc *http.Client, host string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil)
	if err != nil {
		return false, err
	}
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
		return false, nil
	}
	var rh tls.RecordHeaderError
	if errors.Is(err, http.ErrSchemeMismatch) || errors.As(err, &rh) {
		return true, nil
	}
	return false, err
}

func isLoopbackHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}

// sigParseReference parses REF; a registry host is required.
func sigParseReference(s string) (registry.Reference, error) {
	ref, err := registry.ParseReference(s)
	if err != nil {
		return registry.Reference{}, usageErrorf("%q: not a reference (want registry/repository:tag or registry/repository@sha256:...): %v", s, err)
	}
	if ref.Reference == "" {
		ref.Reference = "latest"
	}
	return ref, nil
}
