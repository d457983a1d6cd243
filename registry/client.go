package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/registry/bpfman"
	"github.com/kfm-project/kfm/registry/cache"
)

// Limits cap what kfm accepts from a registry. Descriptors that announce more
// are refused before anything is downloaded; bodies that bring more are cut
// off. Each limit fails with ErrTooLarge.
type Limits struct {
	// MaxManifestSize caps manifests and indexes (default 1 MiB; kfm's
	// are about 1 KiB, registries accept up to 4 MiB).
	MaxManifestSize int64
	// MaxConfigSize caps config blobs (default 1 MiB).
	MaxConfigSize int64
	// MaxObjectSize caps the ELF object and a bpfman layer (default
	// bpf.MaxObjectSize, 64 MiB).
	MaxObjectSize int64
	// Tar bounds the tar layer of a bpfman image.
	Tar bpfman.Limits
}

// DefaultLimits are the limits of a Client whose Options leave them zero.
var DefaultLimits = Limits{
	MaxManifestSize: 1 << 20,
	MaxConfigSize:   MaxConfigSize,
	MaxObjectSize:   64 << 20,
	Tar:             bpfman.DefaultLimits,
}

func (l Limits) withDefaults() Limits {
	if l.MaxManifestSize <= 0 {
		l.MaxManifestSize = DefaultLimits.MaxManifestSize
	}
	if l.MaxConfigSize <= 0 {
		l.MaxConfigSize = DefaultLimits.MaxConfigSize
	}
	if l.MaxObjectSize <= 0 {
		l.MaxObjectSize = DefaultLimits.MaxObjectSize
	}
	if l.Tar == (bpfman.Limits{}) {
		l.Tar = DefaultLimits.Tar
	}
	return l
}

// Options configure a Client.
type Options struct {
	// Cache is where pulled bundles go; required by Pull, Fetch and Open.
	Cache *cache.Cache
	// Credentials is the credential store. Nil means the Docker one:
	// $DOCKER_CONFIG/config.json or ~/.docker/config.json with its
	// credential helpers, shared with docker, oras and helm.
	Credentials credentials.Store
	// PlainHTTP talks HTTP instead of HTTPS to every registry. Without it,
	// HTTP is used only for loopback registries that do not speak TLS.
	PlainHTTP bool
	// CAFile is a PEM file of extra certificate authorities to trust
	// (besides the system's) for registries with a private CA.
	CAFile string
	// Limits; zero fields take DefaultLimits.
	Limits Limits
	// Concurrency bounds parallel transfers of PullAll (default 8).
	Concurrency int
	// UserAgent is sent to registries (default "kfm").
	UserAgent string
	// Retry bounds retries, waits and the time of each registry
	// operation; zero fields take DefaultRetryPolicy's.
	Retry RetryPolicy
}

// Client talks to OCI registries through oras-go and keeps what it pulls in
// the cache. A Client is safe for concurrent use; reuse one so that
// connections and tokens are shared.
type Client struct {
	opts   Options
	limits Limits
	retry  RetryPolicy
	creds  credentials.Store
	http   *http.Client

	probeMu  sync.Mutex // serialises scheme probes
	mu       sync.Mutex
	auths    map[string]*auth.Client // per registry host
	plain    map[string]bool         // probed scheme of loopback hosts
	tokenTTL auth.Cache
}

// NewClient makes a Client. It reads the CA file and opens the credential
// store; it does not contact any registry.
func NewClient(opts Options) (*Client, error) {
	c := &Client{opts: opts, limits: opts.Limits.withDefaults(), retry: opts.Retry.withDefaults(), auths: map[string]*auth.Client{}, plain: map[string]bool{}, tokenTTL: auth.NewCache()}
	if c.opts.Concurrency <= 0 {
		c.opts.Concurrency = 8
	}
	if c.opts.UserAgent == "" {
		c.opts.UserAgent = "kfm"
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	if opts.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", opts.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c.http = &http.Client{Transport: &retryTransport{base: tr, policy: c.retry}}
	c.creds = opts.Credentials
	if c.creds == nil {
		store, err := DockerCredentials()
		if err != nil {
			return nil, err
		}
		c.creds = store
	}
	return c, nil
}

// DockerCredentials opens the Docker credential store ($DOCKER_CONFIG or
// ~/.docker/config.json, with its credential helpers), as docker, oras and
// helm use it. Logins store passwords in the file only when no credential
// helper is configured or installed, as `docker login` does.
func DockerCredentials() (credentials.Store, error) {
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{AllowPlaintextPut: true, DetectDefaultNativeStore: true})
	if err != nil {
		return nil, fmt.Errorf("docker credential store: %w", err)
	}
	return store, nil
}

// Cache is the client's cache (nil when the client has none).
func (c *Client) Cache() *cache.Cache { return c.opts.Cache }

// Limits are the limits in force.
func (c *Client) Limits() Limits { return c.limits }

// authClient returns the HTTP client for registry host: credentials from the
// store, tokens cached, and, for a loopback registry only, token realms on
// loopback addresses allowed (oras-go refuses them by default so that a
// remote registry cannot point credentials at local services).
func (c *Client) authClient(host string) *auth.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ac, ok := c.auths[host]; ok {
		return ac
	}
	ac := &auth.Client{
		Client:     c.http,
		Cache:      c.tokenTTL,
		Credential: credentials.Credential(c.creds),
		Header:     http.Header{"User-Agent": {c.opts.UserAgent}},
		ClientID:   "kfm",
	}
	if IsLoopback(host) {
		ac.BlockedRealmPrefixes = withoutLoopback(auth.DefaultBlockedRealmPrefixes())
	}
	c.auths[host] = ac
	return ac
}

func withoutLoopback(ps []netip.Prefix) []netip.Prefix {
	out := []netip.Prefix{}
	for _, p := range ps {
		if p.Addr().IsLoopback() {
			continue
		}
		out = append(out, p)
	}
	return out
}

// Repository returns an oras-go repository for ref with kfm's transport,
// credentials, TLS and plain-HTTP rules, and size limits, for callers that
// need the registry directly (signatures: referrers, pushing .sig tags).
func (c *Client) Repository(ctx context.Context, ref Reference) (*remote.Repository, error) {
	plain, err := c.usePlainHTTP(ctx, ref.Registry)
	if err != nil {
		return nil, classify(err, ref.String(), ref.Registry)
	}
	return &remote.Repository{
		Client:               c.authClient(ref.Registry),
		Reference:            ref.orasRef(),
		PlainHTTP:            plain,
		MaxMetadataBytes:     c.limits.MaxManifestSize,
		TagListMaxPages:      100,
		ReferrerListMaxPages: 100,
	}, nil
}

// registry returns an oras-go registry handle for host (login).
func (c *Client) registry(ctx context.Context, host string) (*remote.Registry, error) {
	plain, err := c.usePlainHTTP(ctx, host)
	if err != nil {
		return nil, classify(err, host, host)
	}
	reg, err := remote.NewRegistry(host)
	if err != nil {
		return nil, fmt.Errorf("%q: %w: %v", host, ErrInvalidReference, err)
	}
	reg.Client = c.authClient(host)
	reg.PlainHTTP = plain
	return reg, nil
}

// usePlainHTTP decides the scheme for host: HTTPS, unless the Client was
// told PlainHTTP, or host is a loopback registry that answers HTTPS with
// plain HTTP (probed once per Client).
func (c *Client) usePlainHTTP(ctx context.Context, host string) (bool, error) {
	if c.opts.PlainHTTP {
		return true, nil
	}
	if !IsLoopback(host) {
		return false, nil
	}
	// One probe per host, even when many pulls start at once.
	c.probeMu.Lock()
	defer c.probeMu.Unlock()
	c.mu.Lock()
	plain, ok := c.plain[host]
	c.mu.Unlock()
	if ok {
		return plain, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil)
	if err != nil {
		return false, err
	}
	resp, err := c.http.Do(req)
	switch {
	case err == nil:
		resp.Body.Close()
		plain = false
	case errors.Is(err, http.ErrSchemeMismatch):
		plain = true
	default:
		var rh tls.RecordHeaderError
		if !errors.As(err, &rh) {
			return false, err
		}
		plain = true
	}
	c.mu.Lock()
	c.plain[host] = plain
	c.mu.Unlock()
	return plain, nil
}
