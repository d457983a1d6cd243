package registry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/internal/faultproxy"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// fakeClock is a RetryPolicy clock that waits by moving its time on, so
// that backoff and Retry-After are asserted without waiting for them.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	return ctx.Err()
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// checkCache fails the test when the cache holds a file under blobs/ whose
// bytes do not match its name, or anything left in its ingest directory; it
// reports whether the cache holds d.
func checkCache(t *testing.T, c *cache.Cache, d digest.Digest) bool {
	t.Helper()
	found := false
	for _, p := range cacheBlobs(t, c) {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(filepath.Dir(p))), filepath.Base(p))
		if digest.FromBytes(data) != name {
			t.Errorf("cache holds %s with %d bytes that do not match its name", p, len(data))
		}
		found = found || name == d
	}
	if left, _ := os.ReadDir(filepath.Join(c.Dir(), "ingest")); len(left) != 0 {
		t.Errorf("partial files left in the cache's ingest directory: %v", left)
	}
	return found
}

// rangeFrom is the Range header of a resumed request for a blob of size
// bytes from offset.
func rangeFrom(offset, size int64) string { return fmt.Sprintf("bytes=%d-%d", offset, size-1) }

// fastPolicy is the retry policy of the fault tests: the default tries and
// backoff, on a fake clock.
func fastPolicy(clk *fakeClock) registry.RetryPolicy {
	return registry.RetryPolicy{Attempts: 5, Backoff: time.Second, MaxBackoff: 8 * time.Second, Clock: clk}
}

// Every fault between kfm and a real registry (Distribution behind
// faultproxy), through the real pull path: either the pull succeeds after
// retries (and resumes where it can), or it fails with an error that names
// the registry and what happened, within its bounds. Never does the cache
// hold a partial or wrong blob.
func TestPullUnderRegistryFaults(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	published, _ := publish(t, reg, "kfm/faults", "1.0.0", registry.PackOptions{})
	layer := published.Manifest.Layers[0]
	size, half := layer.Size, layer.Size/2
	layerPath := faultproxy.Blob(layer.Digest)

	type env struct {
		p, storage *faultproxy.Proxy
		clk        *fakeClock
		dead       string
	}
	for _, tc := range []struct {
		name   string
		policy func(*registry.RetryPolicy)
		setup  func(e env)
		// wantErr: substrings of the error; none: the pull succeeds.
		wantErr []string
		wantIs  []error
		check   func(t *testing.T, e env)
	}{
		{
			name: "503 twice then success",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 2, Fault: faultproxy.Status(503)})
			},
			check: func(t *testing.T, e env) {
				if n := e.p.Count("GET", layerPath); n != 3 {
					t.Errorf("the proxy saw %d GETs of the layer, want 3 (two 503s, one success)", n)
				}
				w := e.clk.Waits()
				if len(w) != 2 || w[0] < 900*time.Millisecond || w[0] > 1100*time.Millisecond || w[1] < 1800*time.Millisecond || w[1] > 2200*time.Millisecond {
					t.Errorf("waits %v, want about 1s then 2s (backoff doubling, ±10%%)", w)
				}
			},
		},
		{
			name: "429 with Retry-After is honoured",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.TooManyRequests("7")})
			},
			check: func(t *testing.T, e env) {
				if w := e.clk.Waits(); len(w) != 1 || w[0] != 7*time.Second {
					t.Errorf("waits %v, want the 7s the registry asked for", w)
				}
			},
		},
		{
			name:   "429 with a long Retry-After waits only the cap",
			policy: func(p *registry.RetryPolicy) { p.MaxRetryAfter = 20 * time.Second },
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.TooManyRequests("3600")})
			},
			check: func(t *testing.T, e env) {
				if w := e.clk.Waits(); len(w) != 1 || w[0] != 20*time.Second {
					t.Errorf("waits %v, want the 20s cap instead of the hour asked for", w)
				}
			},
		},
		{
			name: "truncated body is resumed with Range",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.Truncate(half)})
			},
			check: func(t *testing.T, e env) {
				checkRanges(t, e.p, layerPath, "", rangeFrom(half, size))
			},
		},
		{
			name: "connection reset mid-blob is resumed",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.Reset(half)})
			},
			check: func(t *testing.T, e env) {
				reqs := requests(e.p, layerPath)
				if len(reqs) != 2 {
					t.Fatalf("GETs of the layer: %+v, want 2", reqs)
				}
				// A reset may drop bytes the client had not read
				// yet: it resumes from what it holds, at most half.
				var off, last int64
				if reqs[1].Range != "" {
					if _, err := fmt.Sscanf(reqs[1].Range, "bytes=%d-%d", &off, &last); err != nil || off <= 0 || off > half || last != size-1 {
						t.Errorf("resumed with Range %q, want bytes=N-%d with 0 < N <= %d", reqs[1].Range, size-1, half)
					}
				}
				t.Logf("resumed with %q", reqs[1].Range)
			},
		},
		{
			name:   "stalled body is abandoned and resumed",
			policy: func(p *registry.RetryPolicy) { p.StallTimeout = 500 * time.Millisecond },
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.Stall(half)})
			},
			check: func(t *testing.T, e env) {
				checkRanges(t, e.p, layerPath, "", rangeFrom(half, size))
			},
		},
		{
			name: "Content-Length too large once",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.ContentLength(+100)})
			},
			check: func(t *testing.T, e env) { checkRanges(t, e.p, layerPath, "", "") },
		},
		{
			name: "Content-Length too small once",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.ContentLength(-100)})
			},
			check: func(t *testing.T, e env) { checkRanges(t, e.p, layerPath, "", "") },
		},
		{
			name: "slow trickle within the bound",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Trickle(2048, 5*time.Millisecond)})
			},
			check: func(t *testing.T, e env) { checkRanges(t, e.p, layerPath, "") },
		},
		{
			name: "redirect to a storage host",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Redirect(e.storage.URL())})
			},
			check: func(t *testing.T, e env) { checkRanges(t, e.storage, layerPath, "") },
		},
		{
			name: "redirect to a storage host that cuts the body short",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Redirect(e.storage.URL())})
				e.storage.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.Truncate(half)})
			},
			check: func(t *testing.T, e env) {
				// The registry is asked again and redirects again;
				// the storage host gets the Range request.
				checkRanges(t, e.p, layerPath, "", rangeFrom(half, size))
				checkRanges(t, e.storage, layerPath, "", rangeFrom(half, size))
			},
		},
		{
			name: "redirect to a dead host",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Redirect("http://" + e.dead)})
			},
			wantErr: []string{"storage host DEAD (where registry PROXY redirected) stayed unreachable after 5 tries", "connection refused", "kfm/faults"},
			wantIs:  []error{registry.ErrUnavailable, registry.ErrUnreachable},
		},
		{
			name: "503 on every try",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Status(503)})
			},
			wantErr: []string{"registry PROXY kept failing with HTTP 503 after 5 tries over 1", "layer " + layer.Digest.String(), "PROXY/kfm/faults", "injected by faultproxy", "--registry-attempts"},
			wantIs:  []error{registry.ErrUnavailable},
			check: func(t *testing.T, e env) {
				if n := e.p.Count("GET", layerPath); n != 5 {
					t.Errorf("the proxy saw %d GETs of the layer, want 5", n)
				}
			},
		},
		{
			name: "manifest lookup fails with 500 on every try",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "HEAD", Path: faultproxy.Manifests, Fault: faultproxy.Status(500)})
			},
			wantErr: []string{"PROXY/kfm/faults:1.0.0: registry PROXY kept failing with HTTP 500 after 5 tries"},
			wantIs:  []error{registry.ErrUnavailable},
			check: func(t *testing.T, e env) {
				if n := e.p.Count("HEAD", faultproxy.Manifests); n != 5 {
					t.Errorf("the proxy saw %d HEADs of the manifest, want 5", n)
				}
			},
		},
		{
			// Every try brings 1000 more bytes: the tries are counted
			// anew after each, and the blob completes.
			name: "body cut short on every try makes progress until it is whole",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Truncate(1000)})
			},
			check: func(t *testing.T, e env) {
				want := []string{""}
				for off := int64(1000); off < size; off += 1000 {
					want = append(want, rangeFrom(off, size))
				}
				if len(want) < 5 {
					t.Fatalf("the layer has %d bytes: too few to show more than 5 tries", size)
				}
				checkRanges(t, e.p, layerPath, want...)
				for _, w := range e.clk.Waits() {
					if w < 900*time.Millisecond || w > 1100*time.Millisecond {
						t.Errorf("waits %v, want the first backoff (1s ±10%% here) after each try that made progress", e.clk.Waits())
						break
					}
				}
			},
		},
		{
			// Half of the blob, then nothing more: five tries in a row
			// without progress end it.
			name: "body that stops growing gives up after the tries without progress",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.Truncate(half)})
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Truncate(0)})
			},
			wantErr: []string{"registry PROXY kept failing after 5 tries", fmt.Sprintf("broke off after %d of", half)},
			wantIs:  []error{registry.ErrUnavailable},
			check: func(t *testing.T, e env) {
				checkRanges(t, e.p, layerPath, "", rangeFrom(half, size), rangeFrom(half, size), rangeFrom(half, size), rangeFrom(half, size))
			},
		},
		{
			name: "Content-Length wrong on every try",
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.ContentLength(-100)})
			},
			policy: func(p *registry.RetryPolicy) { p.Attempts = 3 },
			wantErr: []string{"kept failing after 3 tries",
				fmt.Sprintf("announced %d bytes (Content-Length), the manifest says %d", size-100, size)},
			wantIs: []error{registry.ErrUnavailable},
		},
		{
			// The time bound, not the tries, ends this one: waits of
			// 2s ±10%, 8.9s allowed: the fifth wait cannot fit.
			name: "time bound",
			policy: func(p *registry.RetryPolicy) {
				p.Attempts, p.Backoff, p.MaxBackoff, p.Timeout = 100, 2*time.Second, 2*time.Second, 8900*time.Millisecond
			},
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Status(502)})
			},
			wantErr: []string{"kept failing with HTTP 502 after 5 tries", "would have passed the time bound"},
			wantIs:  []error{registry.ErrUnavailable},
			check: func(t *testing.T, e env) {
				if n := e.p.Count("GET", layerPath); n != 5 {
					t.Errorf("the proxy saw %d GETs of the layer, want 5", n)
				}
			},
		},
		{
			name: "slow trickle past the bound",
			policy: func(p *registry.RetryPolicy) {
				p.Clock, p.Timeout = nil, time.Second // real time
			},
			setup: func(e env) {
				e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Trickle(100, 50*time.Millisecond)})
			},
			wantErr: []string{"gave up after 1s, the bound on one registry operation (--registry-timeout)"},
			wantIs:  []error{registry.ErrUnavailable},
			check:   func(t *testing.T, e env) { checkRanges(t, e.p, layerPath, "") },
		},
		{
			name:    "404 is not retried",
			setup:   func(e env) { e.p.Add(faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Status(404)}) },
			wantIs:  []error{registry.ErrNotFound},
			wantErr: []string{"layer " + layer.Digest.String()},
			check:   func(t *testing.T, e env) { checkRanges(t, e.p, layerPath, "") },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e := env{
				p:       faultproxy.Start(t, reg.Host(), faultproxy.Options{}),
				storage: faultproxy.Start(t, reg.Host(), faultproxy.Options{}),
				clk:     newFakeClock(),
				dead:    faultproxy.DeadHost(t),
			}
			policy := fastPolicy(e.clk)
			if tc.policy != nil {
				tc.policy(&policy)
			}
			tc.setup(e)
			c := newClient(t, nil, func(o *registry.Options) { o.Retry = policy })
			ref := mustRef(t, e.p.Host()+"/kfm/faults:1.0.0")
			b, err := c.Pull(ctx, ref, registry.PullOptions{})
			cached := checkCache(t, c.Cache(), layer.Digest)
			if tc.wantErr == nil && tc.wantIs == nil {
				if err != nil {
					t.Fatalf("pull: %v\nproxy saw: %+v", err, e.p.Requests())
				}
				if !bytes.Equal(b.Object, published.Object) || b.Digest != published.Digest {
					t.Error("the pulled object differs from the published one")
				}
				if !cached {
					t.Error("the layer is not in the cache after a successful pull")
				}
			} else {
				if err == nil {
					t.Fatalf("pull succeeded, want an error\nproxy saw: %+v", e.p.Requests())
				}
				msg := err.Error()
				t.Logf("error: %s", msg)
				for _, want := range tc.wantErr {
					want = strings.NewReplacer("PROXY", e.p.Host(), "DEAD", e.dead).Replace(want)
					if !strings.Contains(msg, want) {
						t.Errorf("error lacks %q", want)
					}
				}
				for _, want := range tc.wantIs {
					if !errors.Is(err, want) {
						t.Errorf("error is not %v", want)
					}
				}
				if cached {
					t.Error("a failed pull left the layer in the cache")
				}
				if tags, _ := c.Cache().Tags(ctx); len(tags) != 0 {
					t.Errorf("a failed pull left tags %v", tags)
				}
			}
			if tc.check != nil {
				tc.check(t, e)
			}
		})
	}
}

func requests(p *faultproxy.Proxy, path string) []faultproxy.Request {
	re := regexp.MustCompile(path)
	var out []faultproxy.Request
	for _, r := range p.Requests() {
		if r.Method == "GET" && re.MatchString(r.Path) {
			out = append(out, r)
		}
	}
	return out
}

// checkRanges checks the Range headers of the GETs of path, in order.
func checkRanges(t *testing.T, p *faultproxy.Proxy, path string, want ...string) {
	t.Helper()
	reqs := requests(p, path)
	var got []string
	for _, r := range reqs {
		got = append(got, r.Range)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(got) != len(want) {
		t.Errorf("%s: GETs with Range %q, want %q\n%+v", p.Host(), got, want, reqs)
	}
}

// TLS errors end the pull at the first try, and say what to do.
func TestPullTLSFaults(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	publish(t, reg, "kfm/tls", "1.0.0", registry.PackOptions{})
	for _, tc := range []struct {
		cert faultproxy.Cert
		want string
	}{
		{faultproxy.CertValid, ""},
		{faultproxy.CertUntrusted, "signed by an authority kfm does not trust; pass --ca-file"},
		{faultproxy.CertExpired, "has expired or is not yet valid"},
		{faultproxy.CertWrongHost, "not valid for that name"},
	} {
		t.Run(tc.cert.String(), func(t *testing.T) {
			p := faultproxy.Start(t, reg.Host(), faultproxy.Options{Cert: tc.cert})
			clk := newFakeClock()
			c := newClient(t, nil, func(o *registry.Options) { o.Retry = fastPolicy(clk); o.CAFile = p.CAFile() })
			_, err := c.Pull(context.Background(), mustRef(t, p.Host()+"/kfm/tls:1.0.0"), registry.PullOptions{})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("pull through a trusted TLS proxy: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("pull succeeded")
			}
			t.Logf("error: %v", err)
			for _, want := range []string{tc.want, "registry " + p.Host(), "TLS errors are not retried", p.Host() + "/kfm/tls:1.0.0"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q", want)
				}
			}
			if !errors.Is(err, registry.ErrUnreachable) {
				t.Error("error is not ErrUnreachable")
			}
			if n := p.Handshakes(); n != 1 {
				t.Errorf("%d TLS handshakes, want 1 (no retry)", n)
			}
			if w := clk.Waits(); len(w) != 0 {
				t.Errorf("waited %v before giving up on a TLS error", w)
			}
			if checkCache(t, c.Cache(), "") || len(cacheBlobs(t, c.Cache())) != 0 {
				t.Error("cache not empty")
			}
		})
	}
}

// Faults on the way to a bundle's signatures, fetched at the same time as
// the bundle (PullOptions.Signatures): a signature blob cut off or a
// referrers API that answers 503 is retried like a bundle's blob, and the
// signature ends up in the cache whole; a bundle that fails ends the pull
// at once with its own error, stopping a signature request the registry
// holds open, and leaves no signature behind half written.
func TestPullSignaturesUnderFaults(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	published, _ := publish(t, reg, "kfm/sigfaults", "1.0.0", registry.PackOptions{})
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: published.Digest, Size: published.Size}
	sigLayer, refDesc := pushReferrer(t, reg, "kfm/sigfaults", subject, []byte(`{"stand-in":"`+strings.Repeat("s", 64<<10)+`"}`))
	layerPath, sigPath := faultproxy.Blob(published.Manifest.Layers[0].Digest), faultproxy.Blob(sigLayer.Digest)
	referrersPath := `^/v2/.+/referrers/`

	for _, tc := range []struct {
		name  string
		rules []faultproxy.Rule
		// wantIs: the pull fails with it; nil: it succeeds and the
		// signature is cached.
		wantIs error
	}{
		{name: "signature blob reset mid-way", rules: []faultproxy.Rule{{Method: "GET", Path: sigPath, Times: 1, Fault: faultproxy.Reset(sigLayer.Size / 2)}}},
		{name: "referrers API 503 twice", rules: []faultproxy.Rule{{Method: "GET", Path: referrersPath, Times: 2, Fault: faultproxy.Status(503)}}},
		{name: "bundle 404 while the signatures stall", wantIs: registry.ErrNotFound, rules: []faultproxy.Rule{
			{Method: "GET", Path: layerPath, Fault: faultproxy.Status(404)},
			{Method: "GET", Path: referrersPath, Fault: faultproxy.Stall(0)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p := faultproxy.Start(t, reg.Host(), faultproxy.Options{})
			for _, r := range tc.rules {
				p.Add(r)
			}
			policy := fastPolicy(newFakeClock())
			// A stalled request that is not stopped would hold the
			// pull for ten minutes.
			policy.StallTimeout = 10 * time.Minute
			c := newClient(t, nil, func(o *registry.Options) { o.Retry = policy })
			ref := mustRef(t, p.Host()+"/kfm/sigfaults:1.0.0")
			type result struct {
				b   *registry.Bundle
				err error
			}
			done := make(chan result, 1)
			go func() {
				b, err := c.Pull(ctx, ref, registry.PullOptions{Signatures: true})
				done <- result{b, err}
			}()
			var res result
			select {
			case res = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("the pull has not returned after a minute\nproxy saw: %+v", p.Requests())
			}
			checkCache(t, c.Cache(), sigLayer.Digest)
			refs, _ := c.Cache().Referrers(ctx, subject, "")
			if tc.wantIs != nil {
				if !errors.Is(res.err, tc.wantIs) {
					t.Fatalf("pull: %v, want %v", res.err, tc.wantIs)
				}
				t.Logf("error: %v", res.err)
				return
			}
			if res.err != nil {
				t.Fatalf("pull: %v\nproxy saw: %+v", res.err, p.Requests())
			}
			if res.b.Digest != published.Digest {
				t.Errorf("pulled %s, want %s", res.b.Digest, published.Digest)
			}
			if len(refs) != 1 || refs[0].Digest != refDesc.Digest {
				t.Errorf("cached referrers %v, want %s", refs, refDesc.Digest)
			}
			if data, err := c.Cache().FetchAll(ctx, sigLayer, 1<<20); err != nil || digest.FromBytes(data) != sigLayer.Digest {
				t.Errorf("the cached signature is not whole: %v", err)
			}
		})
	}
}

// Faults while publishing, between kfm and a real registry: a blob upload or
// a manifest that the registry answers with 503 is sent again; an upload or a
// manifest whose answer is lost (the registry did the work, the client never
// heard) ends as published all the same; a registry that keeps failing the
// manifest fails the publish with an error naming it, and the tag does not
// exist. What a successful publish leaves pulls back byte for byte.
func TestPublishUnderRegistryFaults(t *testing.T) {
	uploads := `^/v2/.+/blobs/uploads/`
	manifests := faultproxy.Manifests
	for _, tc := range []struct {
		name   string
		rules  []faultproxy.Rule
		wantIs error
	}{
		{name: "blob upload 503 once", rules: []faultproxy.Rule{{Method: "PUT", Path: uploads, Times: 1, Fault: faultproxy.Status(503)}}},
		{name: "blob upload answer lost", rules: []faultproxy.Rule{{Method: "PUT", Path: uploads, Times: 1, Fault: faultproxy.LoseResponse()}}},
		{name: "upload session answer lost", rules: []faultproxy.Rule{{Method: "POST", Path: uploads, Times: 1, Fault: faultproxy.LoseResponse()}}},
		{name: "manifest 503 twice", rules: []faultproxy.Rule{{Method: "PUT", Path: manifests, Times: 2, Fault: faultproxy.Status(503)}}},
		{name: "manifest answer lost", rules: []faultproxy.Rule{{Method: "PUT", Path: manifests, Times: 1, Fault: faultproxy.LoseResponse()}}},
		{name: "manifest 500 every time", wantIs: registry.ErrUnavailable, rules: []faultproxy.Rule{{Method: "PUT", Path: manifests, Fault: faultproxy.Status(500)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			reg := testregistry.Start(t, testregistry.Options{})
			p := faultproxy.Start(t, reg.Host(), faultproxy.Options{})
			for _, r := range tc.rules {
				p.Add(r)
			}
			c := newClient(t, nil, func(o *registry.Options) { o.Retry = fastPolicy(newFakeClock()) })
			b := pack(t, registry.PackOptions{})
			ref := mustRef(t, p.Host()+"/kfm/pubfaults:1.0.0")
			pinned, err := c.Publish(ctx, b, ref)
			direct := newClient(t, reg)
			if tc.wantIs != nil {
				if !errors.Is(err, tc.wantIs) || !strings.Contains(err.Error(), p.Host()) {
					t.Fatalf("publish: %v, want %v naming %s", err, tc.wantIs, p.Host())
				}
				t.Logf("error: %v", err)
				if _, err := direct.Pull(ctx, mustRef(t, reg.Ref("kfm/pubfaults", "1.0.0")), registry.PullOptions{}); !errors.Is(err, registry.ErrNotFound) {
					t.Errorf("after a failed publish the tag pulls: %v, want ErrNotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("publish: %v\nproxy saw: %+v", err, p.Requests())
			}
			if pinned.Digest != b.Digest {
				t.Errorf("published %s, want %s", pinned.Digest, b.Digest)
			}
			got, err := direct.Pull(ctx, mustRef(t, reg.Ref("kfm/pubfaults", "1.0.0")), registry.PullOptions{})
			if err != nil {
				t.Fatalf("pull of what was published: %v", err)
			}
			if got.Digest != b.Digest || !bytes.Equal(got.Object, b.Object) {
				t.Errorf("the registry holds %s, want %s with the same object", got.Digest, b.Digest)
			}
		})
	}
}
