package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// Errors callers branch on.
var (
	// ErrNotFound: the cache holds no manifest under that reference or
	// digest.
	ErrNotFound = errors.New("not in the cache")
	// ErrCorrupt: cached bytes no longer match their digest (the disk was
	// changed behind kfm's back). Pulling the bundle again repairs it.
	ErrCorrupt = errors.New("cache content does not match its digest")
	// ErrTooLarge: a blob is larger than the caller allowed.
	ErrTooLarge = errors.New("too large")
	// ErrNotWritable: the cache directory cannot take what kfm has to
	// write: its file system is full or read-only, or kfm may not write
	// there. Nothing half-written stays behind (see Cache); the error
	// also wraps the errno (syscall.ENOSPC, EROFS, EACCES).
	ErrNotWritable = errors.New("cache directory not writable")
)

// indexName is the layout's index; prevIndexName is the previous index
// while a new one is written (see saveIndex).
const (
	indexName     = "index.json"
	prevIndexName = ".index.json.prev"
)

// File modes of the cache, set explicitly whatever the umask: nothing in it
// is writable by group or others (oras-go creates files 0666 and
// directories 0777 and leaves the rest to the umask).
const (
	dirMode  = 0o755
	fileMode = 0o644
)

// lockName is the lock file inside the layout directory. Its first 8 bytes
// count the changes of index.json, so that a process notices when another
// one changed it and reloads.
const lockName = ".kfm-lock"

// Cache is an OCI image layout directory shared by kfm processes. It
// implements oras.GraphTarget, so oras.Copy and oras.ExtendedCopy can copy
// into it directly. A Cache is safe for concurrent use.
type Cache struct {
	dir     string
	storage *oci.Storage // blobs by digest; no index, no lock needed

	mu    sync.Mutex
	store *oci.Store // index and graph; nil = reload before use
	gen   uint64     // generation the store was loaded at
	dirty bool       // the store's index changed: locked saves it
}

// Open opens the cache in dir, creating the directory and an empty layout if
// needed.
//
// A cache on a read-only file system can still be read: Open succeeds when
// the layout exists, and Fetch, Resolve and the other reads work, so that
// bundles already cached install (offline, from kfm.lock). Anything that
// has to write fails with ErrNotWritable.
func Open(ctx context.Context, dir string) (*Cache, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := mkdirMode(abs); err != nil {
		return nil, notWritable(abs, err)
	}
	storage, err := oci.NewStorage(abs)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", abs, err)
	}
	c := &Cache{dir: abs, storage: storage}
	// Create the layout (oci-layout, index.json, blobs/) under the lock.
	err = c.locked(ctx, true, func(*oci.Store) error {
		for _, d := range []string{"blobs", "blobs/sha256", "ingest"} {
			if err := os.MkdirAll(filepath.Join(abs, d), dirMode); err != nil {
				return err
			}
			if err := os.Chmod(filepath.Join(abs, d), dirMode); err != nil {
				return err
			}
		}
		for _, f := range []string{"oci-layout", indexName} {
			if err := os.Chmod(filepath.Join(abs, f), fileMode); err != nil {
				return err
			}
		}
		removeStaleIngests(filepath.Join(abs, "ingest"))
		return nil
	})
	if errors.Is(err, ErrNotWritable) && c.layoutExists() {
		// Read-only: reads work.
		if rerr := c.locked(ctx, false, func(*oci.Store) error { return nil }); rerr == nil {
			return c, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// staleIngest is the age after which a temporary file in the ingest
// directory is taken for the leftover of a killed process.
const staleIngest = time.Hour

// removeStaleIngests removes what killed processes left half-written in
// the ingest directory.
func removeStaleIngests(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && time.Since(info.ModTime()) > staleIngest {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// layoutExists reports whether dir holds an OCI layout already.
func (c *Cache) layoutExists() bool {
	for _, f := range []string{"oci-layout", indexName} {
		if _, err := os.Stat(filepath.Join(c.dir, f)); err != nil {
			return false
		}
	}
	return true
}

// mkdirMode makes dir (and its parents) if missing and gives a directory it
// made dirMode whatever the umask.
func mkdirMode(dir string) error {
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return nil
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	return os.Chmod(dir, dirMode)
}

// notWritable wraps err, when it says that the cache directory cannot be
// written (full, read-only, permission), in an error that names the
// directory and says what to do.
func notWritable(dir string, err error) error {
	switch {
	case errors.Is(err, ErrNotWritable):
		return err
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("cache %s: %w: %w: the file system is full; free space there (or point --cache-dir / KFM_CACHE_DIR elsewhere) and run the command again (nothing half-written was kept)", dir, ErrNotWritable, err)
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("cache %s: %w: %w: bundles already cached still install, but new ones cannot be stored; make it writable or point --cache-dir / KFM_CACHE_DIR elsewhere", dir, ErrNotWritable, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("cache %s: %w: %w: run kfm as the user that owns it (usually root) or point --cache-dir / KFM_CACHE_DIR elsewhere", dir, ErrNotWritable, err)
	}
	return err
}

// Dir is the layout directory.
func (c *Cache) Dir() string { return c.dir }

// locked runs fn with the index loaded and the directory locked, shared or
// exclusive. After an exclusive fn the generation counter moves on, so that
// other processes reload.
func (c *Cache) locked(ctx context.Context, exclusive bool, fn func(s *oci.Store) error) error {
	f, err := os.OpenFile(filepath.Join(c.dir, lockName), os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil && !exclusive && (errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES)) {
		// A read-only cache: a shared lock needs no write access.
		f, err = os.Open(filepath.Join(c.dir, lockName))
	}
	if err != nil {
		return fmt.Errorf("cache %s: %w", c.dir, notWritable(c.dir, err))
	}
	defer f.Close()
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := flock(ctx, f, how); err != nil {
		return fmt.Errorf("cache %s: lock: %w", c.dir, err)
	}
	// Closing f releases the lock.

	var buf [8]byte
	if _, err := f.ReadAt(buf[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("cache %s: %w", c.dir, err)
	}
	gen := binary.LittleEndian.Uint64(buf[:])

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.store == nil || c.gen != gen {
		c.recoverIndex()
		s, err := oci.NewWithContext(ctx, c.dir)
		if err != nil {
			if nw := notWritable(c.dir, err); nw != err {
				return nw
			}
			return fmt.Errorf("cache %s: %w (remove the directory to start an empty cache; bundles are pulled again)", c.dir, err)
		}
		s.AutoGC = false
		// index.json is written by saveIndex, atomically.
		s.AutoSaveIndex = false
		c.store, c.gen = s, gen
	}
	c.dirty = false
	store := c.store
	err = fn(store)
	if exclusive && err == nil && c.dirty {
		err = c.saveIndex(store)
	}
	if err != nil {
		err = notWritable(c.dir, err)
	}
	if exclusive {
		binary.LittleEndian.PutUint64(buf[:], gen+1)
		if _, werr := f.WriteAt(buf[:], 0); werr != nil && err == nil {
			err = fmt.Errorf("cache %s: %w", c.dir, werr)
		}
		if err != nil {
			// After a failed change the in-memory graph may differ
			// from index.json: reload next time.
			c.store = nil
		} else {
			// Every change went through this store: it is current.
			c.gen = gen + 1
		}
	}
	return err
}

// saveIndex writes index.json so that a failure (a full disk) leaves the
// previous index in place, never a part of the new one: oras-go writes it in
// place, so the previous one is moved aside first and moved back if the
// write fails. A process killed in between leaves only the previous index,
// which recoverIndex puts back. The caller holds the exclusive lock.
func (c *Cache) saveIndex(s *oci.Store) error {
	idx, prev := filepath.Join(c.dir, indexName), filepath.Join(c.dir, prevIndexName)
	if err := os.Rename(idx, prev); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	err := s.SaveIndex()
	if err == nil {
		err = os.Chmod(idx, fileMode)
	}
	if err != nil {
		os.Remove(idx)
		if rerr := os.Rename(prev, idx); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		// The in-memory index is ahead of the file: reload.
		c.store = nil
		return err
	}
	os.Remove(prev)
	return nil
}

// recoverIndex puts back the index a killed saveIndex moved aside.
func (c *Cache) recoverIndex() {
	idx, prev := filepath.Join(c.dir, indexName), filepath.Join(c.dir, prevIndexName)
	if _, err := os.Stat(idx); errors.Is(err, os.ErrNotExist) {
		os.Rename(prev, idx)
	}
}

// flock takes the lock, giving up when ctx ends.
func flock(ctx context.Context, f *os.File, how int) error {
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err == nil {
		return nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- unix.Flock(int(f.Fd()), how) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The goroutine still waits on f; closing f (the caller's
		// defer) makes it return.
		return ctx.Err()
	}
}

// Exists reports whether the cache holds the blob or manifest desc.
func (c *Cache) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return c.storage.Exists(ctx, desc)
}

// Fetch opens the blob or manifest desc. The reader verifies size and digest:
// instead of the end of data it returns an error wrapping ErrCorrupt when the
// bytes on disk no longer match.
func (c *Cache) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := c.storage.Fetch(ctx, desc)
	if err != nil {
		if errors.Is(err, errdef.ErrNotFound) {
			return nil, fmt.Errorf("%s: %w", desc.Digest, ErrNotFound)
		}
		return nil, err
	}
	return &verifyingReader{rc: rc, vr: content.NewVerifyReader(rc, desc), desc: desc}, nil
}

type verifyingReader struct {
	rc   io.ReadCloser
	vr   *content.VerifyReader
	desc ocispec.Descriptor
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	n, err := r.vr.Read(p)
	if err == io.EOF {
		if verr := r.vr.Verify(); verr != nil {
			return n, fmt.Errorf("%s: %w: %w", r.desc.Digest, ErrCorrupt, verr)
		}
	} else if err != nil && isMismatch(err) {
		return n, fmt.Errorf("%s: %w: %w", r.desc.Digest, ErrCorrupt, err)
	}
	return n, err
}

func (r *verifyingReader) Close() error { return r.rc.Close() }

func isMismatch(err error) bool {
	return errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// FetchAll reads the blob or manifest desc, refusing descriptors larger than
// max bytes (ErrTooLarge) and bytes that do not match desc (ErrCorrupt).
func (c *Cache) FetchAll(ctx context.Context, desc ocispec.Descriptor, max int64) ([]byte, error) {
	if desc.Size > max {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed: %w", desc.Digest, desc.Size, max, ErrTooLarge)
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("%s: negative size %d: %w", desc.Digest, desc.Size, ErrCorrupt)
	}
	rc, err := c.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, desc.Size)
	if _, err := io.ReadFull(rc, buf); err != nil {
		if isMismatch(err) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w: %w", desc.Digest, ErrCorrupt, err)
		}
		return nil, err
	}
	// Reading one more byte makes the verifying reader check the digest.
	var one [1]byte
	if n, err := rc.Read(one[:]); n != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = content.ErrTrailingData
		}
		if errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w: %w", desc.Digest, ErrCorrupt, err)
	}
	return buf, nil
}

// Push stores content as desc. The bytes are verified against desc while
// they are written; on a mismatch nothing is stored and the error wraps
// content.ErrMismatchedDigest. Pushing what the cache already holds is not an
// error. A manifest is added to index.json (untagged) so that Resolve by
// digest and Referrers find it; push its config and layers first.
func (c *Cache) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	return c.PushTagged(ctx, desc, r)
}

// PushTagged is Push, and for a manifest also Tag with each of tags (full
// references) in the same locked step. Tags on a blob are ignored.
func (c *Cache) PushTagged(ctx context.Context, desc ocispec.Descriptor, r io.Reader, tags ...string) error {
	if !isManifest(desc.MediaType) {
		err := c.ingesting(desc, func() error { return c.storage.Push(ctx, desc, r) })
		if errors.Is(err, errdef.ErrAlreadyExists) {
			return nil
		}
		if err != nil {
			return notWritable(c.dir, err)
		}
		return nil
	}
	if c.holds(ctx, desc, tags) {
		// Nothing to write (and a read-only cache serves it).
		return nil
	}
	return c.locked(ctx, true, func(s *oci.Store) error {
		c.dirty = true
		err := c.ingesting(desc, func() error { return s.Push(ctx, desc, r) })
		if errors.Is(err, errdef.ErrAlreadyExists) {
			// The blob is there; make sure the index knows it. The
			// graph may not: reload it next time.
			err = s.Tag(ctx, desc, desc.Digest.String())
			c.store = nil
		}
		if err != nil {
			return err
		}
		for _, ref := range tags {
			if err := s.Tag(ctx, desc, ref); err != nil {
				return err
			}
		}
		return nil
	})
}

// ingesting runs push, which writes desc through oras-go's ingest
// directory, and removes the temporary file push left there when it failed
// (oras-go v2.7.0 means to, but its deferred removal sees an empty path
// once ingest returns an error, so a write cut short by a full disk or a
// broken connection would stay behind). Only files for desc that appeared
// during push are removed.
func (c *Cache) ingesting(desc ocispec.Descriptor, push func() error) error {
	pattern := filepath.Join(c.dir, "ingest", desc.Digest.Encoded()+"_*")
	before, _ := filepath.Glob(pattern)
	err := push()
	if err != nil {
		after, _ := filepath.Glob(pattern)
		for _, f := range after {
			if !slices.Contains(before, f) {
				os.Remove(f)
			}
		}
	}
	return err
}

// holds reports whether the manifest desc is cached, indexed, and tagged
// with each of tags already.
func (c *Cache) holds(ctx context.Context, desc ocispec.Descriptor, tags []string) bool {
	if ok, err := c.storage.Exists(ctx, desc); err != nil || !ok {
		return false
	}
	for _, ref := range append([]string{desc.Digest.String()}, tags...) {
		if cur, err := c.Resolve(ctx, ref); err != nil || cur.Digest != desc.Digest {
			return false
		}
	}
	return true
}

// Tag points reference (a full reference such as
// "registry.example.com/net/ratelimit:1.2.0") at the cached manifest desc.
func (c *Cache) Tag(ctx context.Context, desc ocispec.Descriptor, reference string) error {
	if cur, err := c.Resolve(ctx, reference); err == nil && cur.Digest == desc.Digest {
		return nil
	}
	return c.locked(ctx, true, func(s *oci.Store) error {
		c.dirty = true
		return s.Tag(ctx, desc, reference)
	})
}

// Untag removes reference; the content stays.
func (c *Cache) Untag(ctx context.Context, reference string) error {
	return c.locked(ctx, true, func(s *oci.Store) error {
		c.dirty = true
		err := s.Untag(ctx, reference)
		if errors.Is(err, errdef.ErrNotFound) {
			return fmt.Errorf("%s: %w", reference, ErrNotFound)
		}
		return err
	})
}

// Resolve returns the descriptor of the manifest cached under reference: a
// full reference with a tag, as given to Tag, or a digest
// ("sha256:<hex>"). It fails with ErrNotFound otherwise.
func (c *Cache) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	var desc ocispec.Descriptor
	err := c.locked(ctx, false, func(s *oci.Store) error {
		d, err := s.Resolve(ctx, reference)
		if err != nil {
			if errors.Is(err, errdef.ErrNotFound) {
				return fmt.Errorf("%s: %w", reference, ErrNotFound)
			}
			return err
		}
		// For a digest that is not an indexed manifest the store falls
		// back to describing a raw blob: that is not a cached manifest.
		if !isManifest(d.MediaType) {
			return fmt.Errorf("%s: %w", reference, ErrNotFound)
		}
		desc = d
		return nil
	})
	return desc, err
}

// Predecessors returns the cached manifests that point at desc: manifests
// whose config or layer it is, indexes that list it, and referrers whose
// subject it is.
func (c *Cache) Predecessors(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	err := c.locked(ctx, false, func(s *oci.Store) error {
		var err error
		out, err = s.Predecessors(ctx, desc)
		return err
	})
	return out, err
}

// Referrers returns the cached manifests whose subject is desc (OCI 1.1
// referrers, e.g. sigstore bundles), filtered by artifactType unless it is
// empty.
func (c *Cache) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	err := c.locked(ctx, false, func(s *oci.Store) error {
		var err error
		out, err = registry.Referrers(ctx, s, desc, artifactType)
		return err
	})
	slices.SortFunc(out, func(a, b ocispec.Descriptor) int { return compareDigest(a.Digest, b.Digest) })
	return out, err
}

func compareDigest(a, b digest.Digest) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Tags lists every reference tagged in the cache, sorted.
func (c *Cache) Tags(ctx context.Context) ([]string, error) {
	var out []string
	err := c.locked(ctx, false, func(s *oci.Store) error {
		return s.Tags(ctx, "", func(tags []string) error {
			out = append(out, tags...)
			return nil
		})
	})
	slices.Sort(out)
	return out, err
}

func isManifest(mediaType string) bool {
	switch mediaType {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.oci.artifact.manifest.v1+json":
		return true
	}
	return false
}
