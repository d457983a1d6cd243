package kernelvm

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// extractCPIO unpacks an archive with GNU cpio, the reference reader.
func extractCPIO(t *testing.T, archive []byte) string {
	t.Helper()
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatalf("cpio not installed (make deps): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-i", "--make-directories", "--no-absolute-filenames", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(archive)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	return dir
}

func TestCPIOWriterExtracts(t *testing.T) {
	host := filepath.Join(t.TempDir(), "host-file")
	hostData := bytes.Repeat([]byte("0123456789"), 1001) // not a multiple of 4
	if err := os.WriteFile(host, hostData, 0o640); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	steps := []error{
		c.File("init", 0o755, []byte("#!/bin/sh\necho hi\n")),
		c.File("usr/lib/deep/nested/file", 0o644, []byte("abc")), // parents created
		c.Dir("tmp", 0o777|fs.ModeSticky),
		c.Symlink("bin", "usr/bin"),
		c.File("usr/bin/empty", 0o600, nil),
		c.CopyFile("usr/share/copied", 0, host),
		c.Dir("usr/lib", 0o755), // explicit after implicit: fine
	}
	if os.Geteuid() == 0 {
		steps = append(steps, c.CharDev("dev/console", 0o600, 5, 1))
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%512 != 0 {
		t.Errorf("archive is %d bytes, want a multiple of 512", buf.Len())
	}
	dir := extractCPIO(t, buf.Bytes())

	for _, tc := range []struct {
		name string
		mode fs.FileMode
		data string
	}{
		{"init", 0o755, "#!/bin/sh\necho hi\n"},
		{"usr/lib/deep/nested/file", 0o644, "abc"},
		{"usr/bin/empty", 0o600, ""},
		{"usr/share/copied", 0o640, string(hostData)},
	} {
		p := filepath.Join(dir, tc.name)
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if st.Mode() != tc.mode {
			t.Errorf("%s: mode %v, want %v", tc.name, st.Mode(), tc.mode)
		}
		if b, _ := os.ReadFile(p); string(b) != tc.data {
			t.Errorf("%s: contents %q, want %q", tc.name, b, tc.data)
		}
	}
	if st, err := os.Lstat(filepath.Join(dir, "tmp")); err != nil || st.Mode() != fs.ModeDir|fs.ModeSticky|0o777 {
		t.Errorf("tmp: %v, %v; want sticky 0777 directory", st.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin")); err != nil || target != "usr/bin" {
		t.Errorf("bin -> %q (%v), want usr/bin", target, err)
	}
	if os.Geteuid() == 0 {
		st, err := os.Lstat(filepath.Join(dir, "dev/console"))
		if err != nil || st.Mode()&fs.ModeCharDevice == 0 {
			t.Errorf("dev/console: %v, %v; want a character device", st, err)
		}
	}
	if !c.Has("usr/lib/deep") || !c.Has("/usr/bin/empty") || c.Has("usr/nothing") {
		t.Errorf("Has does not track written entries")
	}
}

func TestCPIOWriterErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fn      func(c *cpioWriter) error
		wantErr string
	}{
		{"twice", func(c *cpioWriter) error {
			c.File("a", 0o644, nil)
			return c.File("a", 0o644, nil)
		}, "added twice"},
		{"parent is a file", func(c *cpioWriter) error {
			c.File("a", 0o644, nil)
			return c.File("a/b", 0o644, nil)
		}, "parent a is not a directory"},
		{"dot dot", func(c *cpioWriter) error { return c.File("../etc/passwd", 0o644, nil) }, "bad initramfs entry name"},
		{"inner dot dot", func(c *cpioWriter) error { return c.File("usr/../x", 0o644, nil) }, "bad initramfs entry name"},
		{"empty", func(c *cpioWriter) error { return c.Dir("", 0o755) }, "bad initramfs entry name"},
		{"missing host file", func(c *cpioWriter) error { return c.CopyFile("x", 0, "/nonexistent/kfm") }, "no such file"},
		{"host directory", func(c *cpioWriter) error { return c.CopyFile("x", 0, t.TempDir()) }, "not a regular file"},
		{"sticky error", func(c *cpioWriter) error {
			c.File("../bad", 0o644, nil)
			return c.File("good", 0o644, nil) // the first error sticks
		}, "bad initramfs entry name"},
	} {
		var buf bytes.Buffer
		c := newCPIOWriter(&buf)
		err := tc.fn(c)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		}
		if cerr := c.Close(); cerr == nil {
			t.Errorf("%s: Close succeeded after an error", tc.name)
		}
	}
}
