package cache_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/content"

	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/registry/cache"
)

// Real file system faults (issue 14): a small tmpfs that fills up and a
// read-only bind mount, made by the test and unmounted when it ends.

// tmpfs mounts a tmpfs of size bytes and returns its directory.
func tmpfs(t *testing.T, size int) string {
	t.Helper()
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// readOnly bind-mounts dir read-only onto itself until the test ends.
func readOnly(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
}

// fill leaves about free bytes free on the file system of dir, with a
// filler file it returns (remove it to free the space again).
func fill(t *testing.T, dir string, free int64) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * st.Bsize
	if avail < free {
		t.Fatalf("%s has only %d bytes free", dir, avail)
	}
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, avail-free), 0o600); err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	return filler
}

// files lists every file under dir (relative), with its content; not the
// lock file, whose generation counter counts every attempt.
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ".kfm-lock" {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCacheFull: the cache's file system fills up in the middle of a blob,
// and in the middle of index.json. Each time the push fails with an error
// that names the directory and says what to do, the cache holds exactly
// what it held before (no partial blob, no partial index: every earlier
// tag still resolves), and once space is freed the same push succeeds.
func TestCacheFull(t *testing.T) {
	ctx := context.Background()
	root := tmpfs(t, 1<<20)
	dir := filepath.Join(root, "oci")
	c := open(t, dir)
	// Enough tags that index.json spans several pages.
	base := artifact(t, c, "base", nil)
	for i := range 40 {
		if err := c.Tag(ctx, base, fmt.Sprintf("registry.example.com/net/some-long-repository-name-%02d:1.0.%d", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	index, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if len(index) < 2*os.Getpagesize() {
		t.Fatalf("index.json is %d bytes; the test needs more than two pages", len(index))
	}

	checkUnchanged := func(before map[string]string, what string) {
		t.Helper()
		if after := files(t, dir); !mapsEqual(before, after) {
			t.Errorf("%s changed the cache:\n  before %v\n  after  %v", what, keys(before), keys(after))
		}
		if d, err := c.Resolve(ctx, "registry.example.com/net/some-long-repository-name-07:1.0.7"); err != nil || d.Digest != base.Digest {
			t.Errorf("after %s, an earlier tag resolves to %v, %v", what, d.Digest, err)
		}
	}
	checkError := func(err error, what string) {
		t.Helper()
		if !errors.Is(err, cache.ErrNotWritable) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s on a full disk: %v, want ErrNotWritable and ENOSPC", what, err)
		}
		if msg := err.Error(); !strings.Contains(msg, dir) || !strings.Contains(msg, "free space") {
			t.Errorf("%s: error %q does not name %s and say what to do", what, msg, dir)
		}
	}

	// A 256 KiB blob with 64 KiB free: the write fails part-way.
	big := make([]byte, 256<<10)
	rand.Read(big)
	blob := content.NewDescriptorFromBytes("application/octet-stream", big)
	filler := fill(t, root, 64<<10)
	before := files(t, dir)
	err := c.Push(ctx, blob, bytes.NewReader(big))
	checkError(err, "blob push")
	if ok, _ := c.Exists(ctx, blob); ok {
		t.Error("the cache says it holds the blob that did not fit")
	}
	checkUnchanged(before, "the failed blob push")
	os.Remove(filler)
	if err := c.Push(ctx, blob, bytes.NewReader(big)); err != nil {
		t.Fatalf("push after space was freed: %v", err)
	}

	// One page free: a new manifest fits, the bigger index.json does not.
	filler = fill(t, root, int64(os.Getpagesize()))
	before = files(t, dir)
	tag := "registry.example.com/net/new:2.0.0"
	m := manifestBytes(t, "new")
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, m)
	err = c.PushTagged(ctx, desc, bytes.NewReader(m), tag)
	checkError(err, "manifest push")
	delete(before, "blobs/sha256/"+desc.Digest.Encoded()) // the manifest blob itself may stay: it is whole
	after := files(t, dir)
	delete(after, "blobs/sha256/"+desc.Digest.Encoded())
	if !mapsEqual(before, after) {
		t.Errorf("the failed manifest push changed the cache:\n  before %v\n  after  %v", keys(before), keys(after))
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "index.json")); !bytes.Equal(got, []byte(before["index.json"])) {
		t.Error("index.json changed although writing the new one failed")
	}
	if _, err := c.Resolve(ctx, tag); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("the tag of the failed push resolves: %v", err)
	}
	// A fresh process sees the intact index too.
	if d, err := open(t, dir).Resolve(ctx, "registry.example.com/net/some-long-repository-name-39:1.0.39"); err != nil || d.Digest != base.Digest {
		t.Errorf("reopened cache: %v, %v", d.Digest, err)
	}
	os.Remove(filler)
	if err := c.PushTagged(ctx, desc, bytes.NewReader(m), tag); err != nil {
		t.Fatalf("manifest push after space was freed: %v", err)
	}
	if d, err := open(t, dir).Resolve(ctx, tag); err != nil || d.Digest != desc.Digest {
		t.Errorf("after the repair the tag resolves to %v, %v", d.Digest, err)
	}
}

// TestCacheReadOnly: a cache on a read-only file system still serves what
// it holds (installs from kfm.lock work offline), and refuses to store new
// content with an error that says so.
func TestCacheReadOnly(t *testing.T) {
	testenv.RequirePrivileged(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "oci")
	c := open(t, dir)
	held := artifact(t, c, "held", nil)
	if err := c.Tag(ctx, held, "registry.example.com/net/held:1.0.0"); err != nil {
		t.Fatal(err)
	}
	before := files(t, dir)
	readOnly(t, dir)

	ro, err := cache.Open(ctx, dir)
	if err != nil {
		t.Fatalf("open a read-only cache: %v", err)
	}
	if d, err := ro.Resolve(ctx, "registry.example.com/net/held:1.0.0"); err != nil || d.Digest != held.Digest {
		t.Fatalf("resolve in a read-only cache: %v, %v", d.Digest, err)
	}
	if _, err := ro.FetchAll(ctx, held, 1<<20); err != nil {
		t.Errorf("fetch from a read-only cache: %v", err)
	}
	// Storing what is there already is no write.
	m, _ := ro.FetchAll(ctx, held, 1<<20)
	if err := ro.PushTagged(ctx, held, bytes.NewReader(m), "registry.example.com/net/held:1.0.0"); err != nil {
		t.Errorf("push of a manifest the read-only cache holds: %v", err)
	}
	data := []byte("new content")
	err = ro.Push(ctx, content.NewDescriptorFromBytes("application/octet-stream", data), bytes.NewReader(data))
	if !errors.Is(err, cache.ErrNotWritable) || !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), dir) {
		t.Errorf("push into a read-only cache: %v, want ErrNotWritable naming %s", err, dir)
	}
	if err := ro.Tag(ctx, held, "registry.example.com/net/held:2.0.0"); !errors.Is(err, cache.ErrNotWritable) {
		t.Errorf("tag in a read-only cache: %v", err)
	}
	if after := files(t, dir); !mapsEqual(before, after) {
		t.Errorf("the read-only cache changed: %v -> %v", keys(before), keys(after))
	}

	// A cache that does not exist yet cannot be made there.
	if _, err := cache.Open(ctx, filepath.Join(dir, "sub")); !errors.Is(err, cache.ErrNotWritable) {
		t.Errorf("open a new cache on a read-only file system: %v", err)
	}
}

func manifestBytes(t *testing.T, payload string) []byte {
	t.Helper()
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"application/x-test","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[],"annotations":{"payload":%q}}`,
		ocispec.MediaTypeImageManifest, ocispec.DescriptorEmptyJSON.Digest, payload))
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestCacheRemovesStaleIngests: a process killed while it wrote a blob
// leaves a temporary file in ingest/; the next Open removes it once it is
// old enough that no live process can still be writing it.
func TestCacheRemovesStaleIngests(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	stale, fresh := filepath.Join(dir, "ingest", "aaaa_1"), filepath.Join(dir, "ingest", "bbbb_2")
	for _, f := range []string{stale, fresh} {
		if err := os.WriteFile(f, []byte("half a blob"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	open(t, dir)
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale ingest file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a fresh ingest file (maybe another process's) was removed: %v", err)
	}
}
