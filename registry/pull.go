package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry/bpfman"
	"github.com/kfm-project/kfm/registry/cache"
)

// Progress reports a transfer of Pull and Fetch.
type Progress struct {
	// Reference is the reference being pulled, as given.
	Reference string
	// Kind is "manifest", "index", "config" or "layer".
	Kind   string
	Digest digest.Digest
	// Done of Total bytes arrived.
	Done, Total int64
	// Cached: the blob came from the cache, nothing was transferred.
	Cached bool
	// Finished: the blob is complete and verified.
	Finished bool
}

// PullOptions tune Pull and Fetch.
type PullOptions struct {
	// Offline uses only the cache: a tag resolves to the digest it was
	// last pulled at, and what the cache does not hold fails with
	// ErrNotCached.
	Offline bool
	// Progress, when set, is called as blobs arrive (from several
	// goroutines at once under PullAll).
	Progress func(Progress)
	// Signatures also copies the bundle's signatures into the cache, as
	// FetchReferrers does, at the same time as the bundle, when the
	// bundle is not cached yet: a verification that follows finds them
	// there after one wait for the registry instead of two. Failing to
	// fetch them does not fail the pull: the verification finds no
	// signature in the cache, fetches them again and reports what
	// fails.
	Signatures bool
}

// Resolve turns ref into a pinned reference and the descriptor of its
// manifest, asking the registry at most once. A pinned reference whose
// manifest is cached needs no network; a tag is resolved by the registry
// (HEAD request), or by the cache when offline. Everything afterwards (Fetch,
// verification, Open) must use the returned digest, never the tag again.
func (c *Client) Resolve(ctx context.Context, ref Reference, opts PullOptions) (Reference, ocispec.Descriptor, error) {
	if ref.IsPinned() && c.opts.Cache != nil {
		if desc, err := c.opts.Cache.Resolve(ctx, ref.Digest.String()); err == nil {
			return ref, desc, nil
		}
	}
	if opts.Offline {
		return c.resolveCached(ctx, ref)
	}
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return Reference{}, ocispec.Descriptor{}, err
	}
	var desc ocispec.Descriptor
	err = c.bound(ctx, ref.String(), func(ctx context.Context) (err error) {
		desc, err = repo.Resolve(ctx, ref.orasRef().Reference)
		return err
	})
	if err != nil {
		return Reference{}, ocispec.Descriptor{}, classify(err, ref.String(), ref.Registry)
	}
	if ref.IsPinned() && desc.Digest != ref.Digest {
		return Reference{}, ocispec.Descriptor{}, fmt.Errorf("%s: %w: the registry answered with %s", ref, ErrDigestMismatch, desc.Digest)
	}
	if desc.Size > c.limits.MaxManifestSize {
		return Reference{}, ocispec.Descriptor{}, fmt.Errorf("%s: %w: the manifest has %d bytes, kfm accepts at most %d", ref, ErrTooLarge, desc.Size, c.limits.MaxManifestSize)
	}
	return ref.Pinned(desc.Digest), desc, nil
}

func (c *Client) resolveCached(ctx context.Context, ref Reference) (Reference, ocispec.Descriptor, error) {
	if c.opts.Cache == nil {
		return Reference{}, ocispec.Descriptor{}, fmt.Errorf("%s: %w (no cache configured)", ref, ErrNotCached)
	}
	key := ref.TagRef()
	if ref.IsPinned() {
		key = ref.Digest.String()
	}
	desc, err := c.opts.Cache.Resolve(ctx, key)
	if err != nil {
		if errors.Is(err, cache.ErrNotFound) {
			return Reference{}, ocispec.Descriptor{}, fmt.Errorf("%s: %w: pull it first (without --offline)", ref, ErrNotCached)
		}
		return Reference{}, ocispec.Descriptor{}, err
	}
	return ref.Pinned(desc.Digest), desc, nil
}

// Fetch brings the bundle of a pinned reference (from Resolve) into the
// cache, unless it is there already, and tags it in the cache with the
// reference's tag. Every blob is verified against its digest while it
// arrives and kept in memory until the whole bundle has arrived and validated;
// only then is anything written to the cache, so a refused bundle leaves no
// trace there.
func (c *Client) Fetch(ctx context.Context, ref Reference, desc ocispec.Descriptor, opts PullOptions) error {
	return c.bound(ctx, ref.String(), func(ctx context.Context) error {
		_, err := c.fetch(ctx, ref, desc, opts)
		return err
	})
}

// fetch is Fetch; it returns the bundle it validated (nil when the cache
// had it already).
func (c *Client) fetch(ctx context.Context, ref Reference, desc ocispec.Descriptor, opts PullOptions) (*Bundle, error) {
	if !ref.IsPinned() || desc.Digest != ref.Digest {
		return nil, fmt.Errorf("%s: Fetch needs the pinned reference and descriptor from Resolve", ref)
	}
	if c.opts.Cache == nil {
		return nil, fmt.Errorf("%s: no cache configured", ref)
	}
	if ok, err := c.cached(ctx, desc); err != nil {
		return nil, err
	} else if ok {
		if opts.Progress != nil {
			opts.Progress(Progress{Reference: ref.String(), Kind: kindOf(desc), Digest: desc.Digest, Done: desc.Size, Total: desc.Size, Cached: true, Finished: true})
		}
		return nil, c.tagCache(ctx, ref, desc)
	}
	if opts.Offline {
		return nil, fmt.Errorf("%s: %w: pull it first (without --offline)", ref, ErrNotCached)
	}
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return nil, err
	}
	if !opts.Signatures {
		return c.fetchBundle(ctx, repo, ref, desc, opts)
	}
	sigCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.fetchReferrers(sigCtx, ref, &desc)
	}()
	b, err := c.fetchBundle(ctx, repo, ref, desc, opts)
	if err != nil {
		cancel() // the signatures of a bundle that failed are not needed
	}
	// Return after them: the cache holds them (or they failed) when the
	// caller verifies.
	<-done
	return b, err
}

// fetchBundle copies the bundle desc from repo into the cache, blobs first.
func (c *Client) fetchBundle(ctx context.Context, repo *remote.Repository, ref Reference, desc ocispec.Descriptor, opts PullOptions) (*Bundle, error) {
	src := &remoteSource{repo: repo, progress: opts.Progress, ref: ref.String(), retry: c.retry}
	b, blobs, err := c.load(ctx, src, ref, desc)
	if err != nil {
		return nil, err
	}
	// Blobs first, the root manifest last, tagged in the same step: a
	// manifest in the cache means that everything it points to is there.
	var tags []string
	if tag := ref.TagRef(); tag != "" {
		tags = append(tags, tag)
	}
	for i, bl := range blobs {
		var err error
		if i == len(blobs)-1 {
			err = c.opts.Cache.PushTagged(ctx, bl.desc, bytes.NewReader(bl.data), tags...)
		} else {
			err = c.opts.Cache.Push(ctx, bl.desc, bytes.NewReader(bl.data))
		}
		if err != nil {
			return nil, fmt.Errorf("%s: cache: %w", ref, err)
		}
	}
	return b, nil
}

func (c *Client) tagCache(ctx context.Context, ref Reference, desc ocispec.Descriptor) error {
	if tag := ref.TagRef(); tag != "" {
		if err := c.opts.Cache.Tag(ctx, desc, tag); err != nil {
			return fmt.Errorf("%s: cache: %w", ref, err)
		}
	}
	return nil
}

// cached reports whether the cache holds the manifest desc and every blob
// it points to (their bytes are verified again by Open). A bundle with a
// blob missing counts as not cached and is fetched again.
func (c *Client) cached(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if _, err := c.opts.Cache.Resolve(ctx, desc.Digest.String()); err != nil {
		if errors.Is(err, cache.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	var check func(d ocispec.Descriptor, depth int) bool
	check = func(d ocispec.Descriptor, depth int) bool {
		data, err := c.opts.Cache.FetchAll(ctx, d, c.limits.MaxManifestSize)
		if err != nil {
			return false
		}
		var m anyManifest
		if json.Unmarshal(data, &m) != nil {
			return false
		}
		if isIndex(d.MediaType) {
			child, err := pickPlatform(m.Manifests)
			return err == nil && depth == 0 && check(child, depth+1)
		}
		blobs := m.Layers
		if m.Config != nil {
			blobs = append(blobs, *m.Config)
		}
		for _, b := range blobs {
			if ok, err := c.opts.Cache.Exists(ctx, b); err != nil || !ok {
				return false
			}
		}
		return true
	}
	return check(desc, 0), nil
}

// Open reads the bundle of a pinned reference from the cache only,
// verifying every blob against its digest again, and validates it. This is
// what install uses after Resolve, Fetch and (with signatures) verification
// of the same digest.
func (c *Client) Open(ctx context.Context, ref Reference) (*Bundle, error) {
	if !ref.IsPinned() {
		return nil, fmt.Errorf("%s: Open needs a pinned reference (from Resolve)", ref)
	}
	if c.opts.Cache == nil {
		return nil, fmt.Errorf("%s: %w (no cache configured)", ref, ErrNotCached)
	}
	desc, err := c.opts.Cache.Resolve(ctx, ref.Digest.String())
	if err != nil {
		if errors.Is(err, cache.ErrNotFound) {
			return nil, fmt.Errorf("%s: %w", ref, ErrNotCached)
		}
		return nil, err
	}
	b, _, err := c.load(ctx, cacheSource{c.opts.Cache}, ref, desc)
	return b, err
}

// Pull resolves ref (once), fetches its bundle into the cache and opens it
// from there: Resolve + Fetch + Open. The returned bundle's Reference is
// pinned to the digest that was fetched.
func (c *Client) Pull(ctx context.Context, ref Reference, opts PullOptions) (*Bundle, error) {
	pinned, desc, err := c.Resolve(ctx, ref, opts)
	if err != nil {
		return nil, err
	}
	var b *Bundle
	err = c.bound(ctx, pinned.String(), func(ctx context.Context) (err error) {
		b, err = c.fetch(ctx, pinned, desc, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	if b != nil {
		// Just fetched and validated: the same verified bytes the
		// cache now holds.
		return b, nil
	}
	return c.Open(ctx, pinned)
}

// PullAll pulls refs concurrently (Options.Concurrency at a time) and returns
// the bundles in the order of refs. It stops at the first error.
func (c *Client) PullAll(ctx context.Context, refs []Reference, opts PullOptions) ([]*Bundle, error) {
	out := make([]*Bundle, len(refs))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Concurrency)
	for i, ref := range refs {
		g.Go(func() error {
			b, err := c.Pull(ctx, ref, opts)
			out[i] = b
			return err
		})
	}
	return out, g.Wait()
}

// blob is fetched content waiting to be written to the cache.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

// source is where load reads blobs from: the registry or the cache.
type source interface {
	fetch(ctx context.Context, desc ocispec.Descriptor, max int64, kind string) ([]byte, error)
}

type remoteSource struct {
	retry    RetryPolicy
	repo     *remote.Repository
	ref      string
	progress func(Progress)
}

// fetch reads desc from the registry, refusing it unread when desc is
// larger than max, and verifying size and digest before it returns. A
// transfer that breaks off, stalls or arrives with a wrong length is tried
// again under the client's RetryPolicy, from where it stopped (HTTP Range)
// for a blob. What it returns is whole and verified; nothing partial leaves
// this function.
func (s *remoteSource) fetch(ctx context.Context, desc ocispec.Descriptor, max int64, kind string) ([]byte, error) {
	if desc.Size > max {
		return nil, fmt.Errorf("%s %s: %w: %d bytes, kfm accepts at most %d", kind, desc.Digest, ErrTooLarge, desc.Size, max)
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("%s %s: %w: negative size", kind, desc.Digest, ErrInvalidBundle)
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %v", kind, desc.Digest, ErrInvalidBundle, err)
	}
	b := newBudget(s.retry)
	ctx = withBudget(ctx, b)
	t := &transfer{src: s, desc: desc, kind: kind, data: make([]byte, 0, desc.Size), ranges: !isManifestKind(kind)}
	for {
		had := len(t.data)
		f, err := t.try(ctx)
		if err == nil && f == nil {
			break
		}
		if err != nil {
			return nil, classify(err, fmt.Sprintf("%s %s", kind, desc.Digest), s.repo.Reference.Registry)
		}
		if len(t.data) > had {
			b.progress()
		}
		if err := b.fail(ctx, *f); err != nil {
			return nil, classify(err, fmt.Sprintf("%s %s", kind, desc.Digest), s.repo.Reference.Registry)
		}
	}
	if s.progress != nil {
		s.progress(Progress{Reference: s.ref, Kind: kind, Digest: desc.Digest, Done: desc.Size, Total: desc.Size, Finished: true})
	}
	return t.data, nil
}

func isManifestKind(kind string) bool { return kind == "manifest" || kind == "index" }

// transfer is one blob or manifest on its way from the registry: the bytes
// received so far (not yet verified) and whether the registry may be asked
// for the rest with a Range request.
type transfer struct {
	src     *remoteSource
	desc    ocispec.Descriptor
	kind    string
	data    []byte
	ranges  bool // a Range request may continue data
	resumed bool // data holds bytes of more than one response
}

// try makes one request for what is missing. It returns (nil, nil) when
// data is complete and verified, a failure worth another try, or an error
// that ends the transfer.
func (t *transfer) try(ctx context.Context) (*failure, error) {
	repo := t.src.repo
	ref := repo.Reference
	endpoint := "blobs"
	if isManifestKind(t.kind) {
		endpoint = "manifests"
	}
	scheme := "https"
	if repo.PlainHTTP {
		scheme = "http"
	}
	u := fmt.Sprintf("%s://%s/v2/%s/%s/%s", scheme, ref.Host(), ref.Repository, endpoint, t.desc.Digest)
	ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionPull)
	// A try that receives nothing for StallTimeout is cancelled.
	tryCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled atomic.Bool
	stall := time.AfterFunc(t.src.retry.StallTimeout, func() { stalled.Store(true); cancel() })
	defer stall.Stop()

	req, err := http.NewRequestWithContext(tryCtx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if isManifestKind(t.kind) {
		req.Header.Set("Accept", t.desc.MediaType)
	}
	offset := int64(len(t.data))
	if offset > 0 && t.ranges {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, t.desc.Size-1))
	} else {
		t.data, offset = t.data[:0], 0
	}
	host := ref.Registry
	fail := func(resp *http.Response, format string, args ...any) *failure {
		f := &failure{host: host, err: fmt.Errorf(format, args...)}
		if resp != nil && resp.Request != nil && resp.Request.URL.Host != host {
			f.host, f.redirectedFrom = resp.Request.URL.Host, host
		}
		return f
	}
	stalledErr := func(err error) (*failure, error) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if stalled.Load() {
			return fail(nil, "nothing arrived for %s (after %d of %d bytes)", t.src.retry.StallTimeout, len(t.data), t.desc.Size), nil
		}
		return nil, err
	}
	resp, err := repo.Client.Do(req)
	if err != nil {
		return stalledErr(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if offset > 0 {
			// The registry ignored the Range header: start over.
			t.data, offset = t.data[:0], 0
			t.ranges = false
		}
		if cl := resp.ContentLength; cl != -1 && cl != t.desc.Size {
			return fail(resp, "the registry announced %d bytes (Content-Length), the manifest says %d", cl, t.desc.Size), nil
		}
	case http.StatusPartialContent:
		if offset == 0 || !validContentRange(resp, offset, t.desc.Size) {
			// A range kfm did not ask for: start over without.
			cr := resp.Header.Get("Content-Range")
			t.data, t.ranges = t.data[:0], false
			return fail(resp, "asked for bytes %d-%d, the registry answered Content-Range %q with %d bytes", offset, t.desc.Size-1, cr, resp.ContentLength), nil
		}
		t.resumed = true
	case http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", t.desc.Digest, errdef.ErrNotFound)
	default:
		return nil, errorResponse(resp)
	}
	want := t.desc.Size - offset
	n, err := io.Copy(&appendWriter{t: t, stall: stall}, io.LimitReader(resp.Body, want+1))
	switch {
	case err != nil:
		f, ferr := stalledErr(err)
		if f == nil && ferr == err {
			f = fail(resp, "the transfer broke off after %d of %d bytes: %v", len(t.data), t.desc.Size, err)
			ferr = nil
		}
		return f, ferr
	case n < want:
		return fail(resp, "the body ended after %d of %d bytes", len(t.data), t.desc.Size), nil
	case n > want:
		t.data = t.data[:0]
		return nil, fmt.Errorf("%s %s: %w: the registry sent more than the %d bytes of the descriptor; nothing was cached", t.kind, t.desc.Digest, ErrDigestMismatch, t.desc.Size)
	}
	if got := t.desc.Digest.Algorithm().FromBytes(t.data); got != t.desc.Digest {
		t.data = t.data[:0]
		if t.resumed {
			// Pieces of different responses may not fit together:
			// one more try, whole.
			t.resumed, t.ranges = false, false
			return fail(resp, "the resumed transfer does not match its digest (got %s)", got), nil
		}
		return nil, fmt.Errorf("%s %s: %w: the registry served different bytes (digest %s); nothing was cached", t.kind, t.desc.Digest, ErrDigestMismatch, got)
	}
	return nil, nil
}

// appendWriter collects a body into a transfer, reports progress and
// keeps the stall timer from firing while bytes arrive.
type appendWriter struct {
	t     *transfer
	stall *time.Timer
}

func (w *appendWriter) Write(p []byte) (int, error) {
	w.t.data = append(w.t.data, p...)
	w.stall.Reset(w.t.src.retry.StallTimeout)
	if fn := w.t.src.progress; fn != nil {
		fn(Progress{Reference: w.t.src.ref, Kind: w.t.kind, Digest: w.t.desc.Digest, Done: int64(len(w.t.data)), Total: w.t.desc.Size})
	}
	return len(p), nil
}

// validContentRange checks a 206 answer: exactly bytes offset..size-1.
func validContentRange(resp *http.Response, offset, size int64) bool {
	var first, last int64
	var total string
	if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%s", &first, &last, &total); err != nil {
		return false
	}
	if first != offset || last != size-1 || (total != "*" && total != strconv.FormatInt(size, 10)) {
		return false
	}
	return resp.ContentLength == -1 || resp.ContentLength == size-offset
}

// errorResponse turns an error answer into oras-go's error type, so that
// classify treats it like the answers oras-go reads.
func errorResponse(resp *http.Response) error {
	er := &errcode.ErrorResponse{Method: resp.Request.Method, URL: resp.Request.URL, StatusCode: resp.StatusCode}
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	if data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<10)); err == nil && json.Unmarshal(data, &body) == nil {
		er.Errors = body.Errors
	}
	return er
}

type cacheSource struct{ c *cache.Cache }

func (s cacheSource) fetch(ctx context.Context, desc ocispec.Descriptor, max int64, kind string) ([]byte, error) {
	data, err := s.c.FetchAll(ctx, desc, max)
	if err != nil {
		return nil, classify(err, fmt.Sprintf("cached %s %s", kind, desc.Digest), "")
	}
	return data, nil
}

func kindOf(desc ocispec.Descriptor) string {
	if isIndex(desc.MediaType) {
		return "index"
	}
	return "manifest"
}

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == dockerManifestListMediaType
}

func isImageManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == dockerManifestMediaType
}

// anyManifest is the union of the fields of manifests and indexes kfm looks
// at.
type anyManifest struct {
	MediaType    string               `json:"mediaType"`
	ArtifactType string               `json:"artifactType"`
	Config       *ocispec.Descriptor  `json:"config"`
	Layers       []ocispec.Descriptor `json:"layers"`
	Manifests    []ocispec.Descriptor `json:"manifests"`
	Subject      *ocispec.Descriptor  `json:"subject"`
	Annotations  map[string]string    `json:"annotations"`
}

// load reads and checks the bundle whose root manifest is desc from src. It
// returns the bundle and every blob read, manifests last.
func (c *Client) load(ctx context.Context, src source, ref Reference, desc ocispec.Descriptor) (*Bundle, []blob, error) {
	root, err := src.fetch(ctx, desc, c.limits.MaxManifestSize, kindOf(desc))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	var m anyManifest
	if err := json.Unmarshal(root, &m); err != nil {
		return nil, nil, fmt.Errorf("%s: %w: the manifest is not JSON: %v", ref, ErrNotBundle, err)
	}
	if m.MediaType != "" && m.MediaType != desc.MediaType {
		return nil, nil, fmt.Errorf("%s: %w: the manifest says media type %s, the registry %s", ref, ErrNotBundle, m.MediaType, desc.MediaType)
	}
	rootBlob := blob{desc: desc, data: root}
	imageDesc, imageJSON := desc, root
	var blobs []blob
	if isIndex(desc.MediaType) {
		child, err := pickPlatform(m.Manifests)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w: %w", ref, ErrNotBundle, err)
		}
		if !isImageManifest(child.MediaType) {
			return nil, nil, fmt.Errorf("%s: %w: the index points at a %s, not an image manifest", ref, ErrNotBundle, child.MediaType)
		}
		data, err := src.fetch(ctx, child, c.limits.MaxManifestSize, "manifest")
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
		m = anyManifest{}
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, nil, fmt.Errorf("%s: %w: manifest %s is not JSON: %v", ref, ErrNotBundle, child.Digest, err)
		}
		imageDesc, imageJSON = child, data
		blobs = append(blobs, blob{desc: plain(child), data: data})
	} else if !isImageManifest(desc.MediaType) {
		return nil, nil, fmt.Errorf("%s: %w: it is a %s", ref, ErrNotBundle, desc.MediaType)
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(imageJSON, &manifest); err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %v", ref, ErrNotBundle, err)
	}
	if m.Config == nil {
		return nil, nil, fmt.Errorf("%s: %w: the manifest has no config", ref, ErrNotBundle)
	}

	b := &Bundle{Reference: ref, Digest: desc.Digest, Size: desc.Size, Manifest: manifest, ManifestDigest: imageDesc.Digest}
	var layers []blob
	switch {
	case m.ArtifactType == ArtifactType || m.Config.MediaType == ConfigMediaType:
		layers, err = c.loadKFM(ctx, src, b, m)
	case m.Config.MediaType == ocispec.MediaTypeImageConfig || m.Config.MediaType == dockerConfigMediaType:
		layers, err = c.loadBpfman(ctx, src, b, m)
	default:
		err = fmt.Errorf("%w: it is %s", ErrNotBundle, describeArtifact(m))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	blobs = append(layers, blobs...)
	return b, append(blobs, rootBlob), nil
}

// loadKFM reads config and object of a kfm bundle and checks that they fit.
func (c *Client) loadKFM(ctx context.Context, src source, b *Bundle, m anyManifest) ([]blob, error) {
	b.Format = FormatKFM
	if m.Config.MediaType != ConfigMediaType {
		return nil, fmt.Errorf("%w: artifactType %s but config media type %s (want %s)", ErrInvalidBundle, m.ArtifactType, m.Config.MediaType, ConfigMediaType)
	}
	var objects, readmes []ocispec.Descriptor
	for _, l := range m.Layers {
		switch l.MediaType {
		case ObjectMediaType:
			objects = append(objects, l)
		case ReadmeMediaType:
			readmes = append(readmes, l)
		}
	}
	if len(readmes) > 1 {
		return nil, fmt.Errorf("%w: a bundle has at most one readme layer (%s), this one has %d", ErrInvalidBundle, ReadmeMediaType, len(readmes))
	}
	if len(objects) != 1 {
		return nil, fmt.Errorf("%w: a bundle has exactly one layer of type %s, this one has %d (of %d layers)", ErrInvalidBundle, ObjectMediaType, len(objects), len(m.Layers))
	}
	layer := objects[0]
	var cfgData, obj []byte
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		cfgData, err = src.fetch(gctx, *m.Config, c.limits.MaxConfigSize, "config")
		return err
	})
	g.Go(func() (err error) {
		obj, err = src.fetch(gctx, layer, c.limits.MaxObjectSize, "layer")
		return err
	})
	var readme []byte
	if len(readmes) == 1 {
		g.Go(func() (err error) {
			readme, err = src.fetch(gctx, readmes[0], MaxReadmeSize, "readme")
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if readme != nil {
		if err := checkReadme(readme); err != nil {
			return nil, fmt.Errorf("%w: readme: %w", ErrInvalidBundle, err)
		}
		b.Readme = string(readme)
	}
	cfg, err := ParseConfig(cfgData)
	if err != nil {
		return nil, err
	}
	b.Config, b.Object, b.ObjectDigest = cfg, obj, layer.Digest
	b.ObjectName = path.Base(layer.Annotations[AnnotationTitle])
	if b.ObjectName == "." || b.ObjectName == "/" {
		b.ObjectName = cfg.Name + ".o"
	}
	o, err := bpf.ParseObject(b.Reference.String(), obj)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	if err := validate(o, cfg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	blobs := []blob{{desc: plain(layer), data: obj}, {desc: plain(*m.Config), data: cfgData}}
	if readme != nil {
		blobs = append(blobs, blob{desc: plain(readmes[0]), data: readme})
	}
	return blobs, nil
}

// loadBpfman reads a bpfman bytecode image and derives a bundle config
// from its labels and object.
func (c *Client) loadBpfman(ctx context.Context, src source, b *Bundle, m anyManifest) ([]blob, error) {
	b.Format = FormatBpfman
	cfgData, err := src.fetch(ctx, *m.Config, c.limits.MaxConfigSize, "config")
	if err != nil {
		return nil, err
	}
	meta, err := bpfman.ParseImageConfig(cfgData)
	if errors.Is(err, bpfman.ErrNotBytecodeImage) {
		return nil, fmt.Errorf("%w: it is a container image with %d layer(s) and no io.ebpf labels (neither a kfm bundle nor a bpfman bytecode image)", ErrNotBundle, len(m.Layers))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	if len(m.Layers) != 1 {
		return nil, fmt.Errorf("%w: a bpfman bytecode image has exactly one layer, this one has %d", ErrInvalidBundle, len(m.Layers))
	}
	layer := m.Layers[0]
	if layer.MediaType != bpfman.LayerMediaType && layer.MediaType != bpfman.DockerLayerMediaType {
		return nil, fmt.Errorf("%w: bytecode image layer has media type %s; kfm reads %s", ErrInvalidBundle, layer.MediaType, bpfman.LayerMediaType)
	}
	data, err := src.fetch(ctx, layer, c.limits.MaxObjectSize, "layer")
	if err != nil {
		return nil, err
	}
	f, err := bpfman.ReadLayer(bytes.NewReader(data), meta.Filename, c.limits.Tar)
	if err != nil {
		return nil, fmt.Errorf("%w: layer %s: %w", ErrInvalidBundle, layer.Digest, err)
	}
	o, err := bpf.ParseObject(b.Reference.String(), f.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	cfg, err := bpfmanConfig(b, meta, o)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	b.Config, b.Object, b.ObjectName, b.ObjectDigest, b.Bpfman = cfg, f.Data, path.Base(f.Name), digest.FromBytes(f.Data), meta
	return []blob{{desc: plain(layer), data: data}, {desc: plain(*m.Config), data: cfgData}}, nil
}

// bpfmanConfig derives a bundle config for a bytecode image: metadata from
// the manifest annotations and the reference, programs from the labels and
// the object (defaults as for kfm bundles, XDP_RUN_CONFIG included).
func bpfmanConfig(b *Bundle, meta *bpfman.Metadata, o *bpf.Object) (*Config, error) {
	ann := b.Manifest.Annotations
	cfg := &Config{
		Name:        firstNonEmpty(meta.Labels[bpfman.ProgramNameLabel], path.Base(b.Reference.Repository)),
		Version:     firstNonEmpty(ann[AnnotationVersion], meta.Labels[AnnotationVersion], b.Reference.Tag),
		Description: firstNonEmpty(ann[AnnotationDescription], meta.Labels[AnnotationDescription]),
		License:     o.License,
		Source:      firstNonEmpty(ann[AnnotationSource], meta.Labels[AnnotationSource]),
	}
	spec, err := o.Spec(nil)
	if err != nil {
		return nil, err
	}
	fns := make([]string, 0, len(meta.Programs))
	for fn := range meta.Programs {
		fns = append(fns, fn)
	}
	sort.Strings(fns)
	for _, fn := range fns {
		p, err := o.Program(fn)
		if err != nil {
			return nil, fmt.Errorf("label %s lists %s: %w", bpfman.ProgramsLabel, fn, err)
		}
		pc, err := programConfig(o, spec, p, nil)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", fn, err)
		}
		cfg.Programs = append(cfg.Programs, pc)
	}
	return cfg, nil
}

// pickPlatform chooses the image for this host from an index: linux and
// the host's architecture, or the only entry without a platform.
func pickPlatform(ms []ocispec.Descriptor) (ocispec.Descriptor, error) {
	var have []string
	for _, d := range ms {
		if d.Platform == nil {
			continue
		}
		have = append(have, d.Platform.OS+"/"+d.Platform.Architecture)
		if d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH {
			return d, nil
		}
	}
	if len(ms) == 1 && ms[0].Platform == nil {
		return ms[0], nil
	}
	slices.Sort(have)
	return ocispec.Descriptor{}, fmt.Errorf("it is an image index without an image for linux/%s (it has %s)", runtime.GOARCH, strings.Join(have, ", "))
}

// describeArtifact says in words what a manifest that is no bundle is.
func describeArtifact(m anyManifest) string {
	switch {
	case m.ArtifactType != "":
		return fmt.Sprintf("an artifact of type %s (a kfm bundle has artifactType %s)", m.ArtifactType, ArtifactType)
	case m.Config != nil:
		return fmt.Sprintf("an artifact with config media type %s and %d layer(s) (a kfm bundle has artifactType %s)", m.Config.MediaType, len(m.Layers), ArtifactType)
	}
	return "an unknown kind of manifest"
}

// plain keeps only what identifies a blob.
func plain(d ocispec.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
}

// FetchReferrers copies the signatures of a pinned reference into the cache,
// so that they verify offline later: every OCI 1.1 referrer of the manifest
// (found through the referrers API or its tag fallback; no artifactType
// filter, as cosign's index entries may say application/vnd.oci.empty.v1+json)
// and the legacy cosign tag sha256-<hex>.sig, which the cache tags as
// "<registry>/<repository>:sha256-<hex>.sig". Each manifest and blob is
// size-capped and verified. It returns the descriptors of what was copied.
func (c *Client) FetchReferrers(ctx context.Context, ref Reference) ([]ocispec.Descriptor, error) {
	var copied []ocispec.Descriptor
	err := c.bound(ctx, ref.String()+" signatures", func(ctx context.Context) (err error) {
		copied, err = c.fetchReferrers(ctx, ref, nil)
		return err
	})
	return copied, err
}

// fetchReferrers is FetchReferrers; subject, when not nil, is the
// descriptor of ref's manifest (from Resolve: the cache need not hold it
// yet). The referrers and the legacy signature tag are fetched at the same
// time.
func (c *Client) fetchReferrers(ctx context.Context, ref Reference, subject *ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if !ref.IsPinned() {
		return nil, fmt.Errorf("%s: FetchReferrers needs a pinned reference", ref)
	}
	if c.opts.Cache == nil {
		return nil, fmt.Errorf("%s: no cache configured", ref)
	}
	repo, err := c.Repository(ctx, ref)
	if err != nil {
		return nil, err
	}
	if subject == nil {
		d, err := c.opts.Cache.Resolve(ctx, ref.Digest.String())
		if err != nil {
			return nil, fmt.Errorf("%s: fetch the bundle before its referrers: %w", ref, err)
		}
		subject = &d
	}
	src := &remoteSource{repo: repo, ref: ref.String(), retry: c.retry}
	var referrers, legacy []ocispec.Descriptor
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var refs []ocispec.Descriptor
		err := repo.Referrers(gctx, *subject, "", func(page []ocispec.Descriptor) error {
			refs = append(refs, page...)
			if len(refs) > 1000 {
				return fmt.Errorf("%w: more than 1000 referrers", ErrTooLarge)
			}
			return nil
		})
		if err != nil {
			return classify(err, ref.String()+" referrers", ref.Registry)
		}
		for _, d := range refs {
			if err := c.copyGraph(gctx, src, d); err != nil {
				return fmt.Errorf("%s: referrer %s: %w", ref, d.Digest, err)
			}
			referrers = append(referrers, d)
		}
		return nil
	})
	g.Go(func() error {
		sigTag := strings.Replace(ref.Digest.String(), ":", "-", 1) + ".sig"
		sigDesc, err := repo.Resolve(gctx, sigTag)
		switch {
		case errors.Is(err, errdef.ErrNotFound):
			return nil
		case err != nil:
			return classify(err, ref.Repo()+":"+sigTag, ref.Registry)
		}
		if err := c.copyGraph(gctx, src, sigDesc); err != nil {
			return fmt.Errorf("%s:%s: %w", ref.Repo(), sigTag, err)
		}
		if err := c.opts.Cache.Tag(gctx, sigDesc, ref.Repo()+":"+sigTag); err != nil {
			return err
		}
		legacy = append(legacy, sigDesc)
		return nil
	})
	err = g.Wait()
	return append(referrers, legacy...), err
}

// copyGraph copies one manifest and the blobs it points at (not further
// manifests) into the cache, blobs first.
func (c *Client) copyGraph(ctx context.Context, src source, desc ocispec.Descriptor) error {
	if !isImageManifest(desc.MediaType) {
		return fmt.Errorf("%w: a %s, not an image manifest", ErrNotBundle, desc.MediaType)
	}
	data, err := src.fetch(ctx, desc, c.limits.MaxManifestSize, "manifest")
	if err != nil {
		return err
	}
	var m anyManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%w: manifest is not JSON: %v", ErrNotBundle, err)
	}
	var blobs []ocispec.Descriptor
	if m.Config != nil {
		blobs = append(blobs, *m.Config)
	}
	blobs = append(blobs, m.Layers...)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, b := range blobs {
		if ok, _ := c.opts.Cache.Exists(ctx, b); ok {
			continue
		}
		g.Go(func() error {
			bd, err := src.fetch(gctx, b, c.limits.MaxConfigSize, "blob")
			if err != nil {
				return err
			}
			return c.opts.Cache.Push(gctx, plain(b), bytes.NewReader(bd))
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return c.opts.Cache.Push(ctx, plain(desc), bytes.NewReader(data))
}
