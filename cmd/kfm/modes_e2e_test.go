package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFileModes: after a round trip of generate-key-pair, publish --sign,
// pull, apply (one chain per backend) and status, run with a umask of 0 so
// that only the modes kfm sets explicitly count, every file and directory
// kfm created has a safe mode (issue 14, item 5): the private key 0600,
// the state directory 0700, nothing in the state directory, the cache or
// the config directory writable by group or others, and every pin and
// directory under <bpffs>/kfm accessible to its owner alone.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	h := newHost(t) // generates the signing key pair with kfm generate-key-pair
	// Directories kfm has to make itself.
	h.stateDir = filepath.Join(t.TempDir(), "run", "kfm")
	h.cacheDir = filepath.Join(t.TempDir(), "var", "cache", "kfm")
	t.Setenv("KFM_STATE_DIR", h.stateDir)
	t.Setenv("KFM_CACHE_DIR", h.cacheDir)

	h.threeBackends() // publish --sign, lock, pull, apply
	h.mustKFM("pull", h.reg.Ref("net/count", "1.0.0"))
	h.checkThreeBackends()

	mode := func(path string) fs.FileMode {
		t.Helper()
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}
	if m := mode(h.key); m != 0o600 {
		t.Errorf("private key %s: mode %#o, want 0600", h.key, m)
	}
	if m := mode(h.pub); m != 0o644 {
		t.Errorf("public key %s: mode %#o, want 0644", h.pub, m)
	}
	// Under a umask that takes the owner's write bit, too: the modes are
	// set, not left to the umask.
	prefix := filepath.Join(t.TempDir(), "strict")
	syscall.Umask(0o277)
	_, stderr, code := h.kfm("generate-key-pair", "--output-key-prefix", prefix)
	syscall.Umask(0)
	if code != exitOK {
		t.Fatalf("generate-key-pair: exit %d: %s", code, stderr)
	}
	if m := mode(prefix + ".key"); m != 0o600 {
		t.Errorf("private key written under umask 0277: mode %#o, want 0600", m)
	}
	if m := mode(prefix + ".pub"); m != 0o644 {
		t.Errorf("public key written under umask 0277: mode %#o, want 0644", m)
	}
	if m := mode(h.stateDir); m != 0o700 {
		t.Errorf("state directory %s: mode %#o, want 0700", h.stateDir, m)
	}
	// walk checks every entry under dir against forbidden mode bits and
	// returns how many it saw.
	walk := func(dir string, forbidden fs.FileMode, what string) int {
		t.Helper()
		n := 0
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			// (The bpffs root and the config directory are the test's.)
			if path == dir && (what == "bpffs" || what == "config") || preloaded(h.bpffs, path) {
				return nil
			}
			n++
			info, err := d.Info()
			if err != nil {
				return err
			}
			if m := info.Mode().Perm(); m&forbidden != 0 {
				t.Errorf("%s: %s has mode %#o (bits %#o must be clear)", what, path, m, forbidden)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	counts := map[string]int{
		"state":  walk(h.stateDir, 0o022, "state"),
		"cache":  walk(h.cacheDir, 0o022, "cache"),
		"bpffs":  walk(filepath.Join(h.bpffs, "kfm"), 0o077, "bpffs"),
		"config": walk(h.configDir, 0o022, "config"),
	}
	// The walks saw what kfm made: state.json and the lock, the cache's
	// blobs, the chains' pins, kfm.yaml and kfm.lock.
	for what, min := range map[string]int{"state": 3, "cache": 10, "bpffs": 20, "config": 3} {
		if counts[what] < min {
			t.Errorf("%s: only %d entries checked, want at least %d", what, counts[what], min)
		}
	}

	// A state directory that others may write into (made by hand, or
	// by an older kfm under another umask) is made private again, and
	// the user is told.
	if err := os.Chmod(h.stateDir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = h.kfm("apply", "--locked")
	if code != exitOK || !strings.Contains(stderr, "made the state directory "+h.stateDir+" private") {
		t.Errorf("apply --locked with the state directory at 0777: exit %d, want %d and a notice:\n%s", code, exitOK, stderr)
	}
	if m := mode(h.stateDir); m != 0o700 {
		t.Errorf("state directory after apply: mode %#o, want 0700", m)
	}
	h.checkThreeBackends()
}
