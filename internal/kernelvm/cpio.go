package kernelvm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// cpioWriter writes an initramfs in the "newc" cpio format the kernel
// unpacks (see Documentation/driver-api/early-userspace/buffer-format.rst).
// Parent directories are added automatically; timestamps and owners are
// zero so the same inputs give the same bytes. Several archives may be
// concatenated: the kernel unpacks them one after the other.
type cpioWriter struct {
	w    *bufio.Writer
	n    int64 // bytes written, for padding
	ino  uint32
	seen map[string]fs.FileMode // entries written so far, by name
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), ino: 1, seen: map[string]fs.FileMode{}}
}

// errCPIOName is wrapped by errors about entry names.
var errCPIOName = errors.New("bad initramfs entry name")

// cleanName turns an entry name into the relative, clean form the archive
// stores ("usr/bin/bash").
func cleanName(name string) (string, error) {
	n := strings.TrimPrefix(path.Clean("/"+name), "/")
	if n == "" || n != strings.TrimPrefix(strings.TrimSuffix(name, "/"), "/") {
		return "", fmt.Errorf("%w: %q (want a clean path like usr/bin/bash)", errCPIOName, name)
	}
	return n, nil
}

func (c *cpioWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(p)
	c.n += int64(n)
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// header writes one newc header and the name.
func (c *cpioWriter) header(name string, mode uint32, size int64) {
	c.headerDev(name, mode, size, 0, 0)
}

// headerDev writes one newc header, with a device number, and the name.
func (c *cpioWriter) headerDev(name string, mode uint32, size int64, major, minor uint32) {
	if size > 0xffffffff {
		c.err = fmt.Errorf("initramfs entry %s: %d bytes is too large for cpio", name, size)
		return
	}
	nlink := uint32(1)
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, major, minor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
}

// parents adds the missing parent directories of name.
func (c *cpioWriter) parents(name string) {
	dir := path.Dir(name)
	if dir == "." {
		return
	}
	if m, ok := c.seen[dir]; ok {
		if !m.IsDir() && c.err == nil {
			c.err = fmt.Errorf("initramfs entry %s: parent %s is not a directory", name, dir)
		}
		return
	}
	c.parents(dir)
	c.seen[dir] = fs.ModeDir | 0o755
	c.header(dir, 0o040755, 0)
}

// claim checks that name was not written before and registers it.
func (c *cpioWriter) claim(name string, mode fs.FileMode) (string, bool) {
	if c.err != nil {
		return "", false
	}
	n, err := cleanName(name)
	if err != nil {
		c.err = err
		return "", false
	}
	if old, ok := c.seen[n]; ok {
		if old.IsDir() && mode.IsDir() {
			return n, false // an explicit directory after an implicit one
		}
		c.err = fmt.Errorf("initramfs entry %s added twice", n)
		return "", false
	}
	c.parents(n)
	c.seen[n] = mode
	return n, true
}

// Dir adds a directory with the given permission bits (sticky bit allowed).
func (c *cpioWriter) Dir(name string, perm fs.FileMode) error {
	if n, ok := c.claim(name, fs.ModeDir|perm); ok {
		c.header(n, 0o040000|unixPerm(perm), 0)
	}
	return c.err
}

// CharDev adds a character device node, such as dev/console (5, 1), which
// the kernel opens for init before any devtmpfs is mounted.
func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	if n, ok := c.claim(name, fs.ModeDevice|fs.ModeCharDevice|perm); ok {
		c.headerDev(n, 0o020000|unixPerm(perm), 0, major, minor)
	}
	return c.err
}

// Symlink adds a symbolic link name -> target.
func (c *cpioWriter) Symlink(name, target string) error {
	if n, ok := c.claim(name, fs.ModeSymlink|0o777); ok {
		c.header(n, 0o120777, int64(len(target)))
		c.write([]byte(target))
		c.pad()
	}
	return c.err
}

// File adds a regular file with the given contents.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) error {
	if n, ok := c.claim(name, perm); ok {
		c.header(n, 0o100000|unixPerm(perm), int64(len(data)))
		c.write(data)
		c.pad()
	}
	return c.err
}

// CopyFile adds a regular file whose contents come from the host file src
// (symbolic links followed). perm 0 keeps the host file's permissions.
func (c *cpioWriter) CopyFile(name string, perm fs.FileMode, src string) error {
	if c.err != nil {
		return c.err
	}
	f, err := os.Open(src)
	if err != nil {
		c.err = err
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		c.err = err
		return err
	}
	if !st.Mode().IsRegular() {
		c.err = fmt.Errorf("initramfs entry %s: %s is not a regular file", name, src)
		return c.err
	}
	if perm == 0 {
		perm = st.Mode().Perm()
	}
	if n, ok := c.claim(name, perm); ok {
		c.header(n, 0o100000|unixPerm(perm), st.Size())
		if c.err == nil {
			var w int64
			w, c.err = io.Copy(c.w, f)
			c.n += w
			if c.err == nil && w != st.Size() {
				c.err = fmt.Errorf("initramfs entry %s: %s changed size while copying", name, src)
			}
		}
		c.pad()
	}
	return c.err
}

// Has reports whether an entry with this name was written.
func (c *cpioWriter) Has(name string) bool {
	n, err := cleanName(name)
	if err != nil {
		return false
	}
	_, ok := c.seen[n]
	return ok
}

// Close writes the trailer and flushes; it does not close the underlying
// writer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0)
	// The kernel reads archives in 512-byte blocks only for compressed
	// ones, but padding keeps concatenation safe for any consumer.
	if r := c.n % 512; r != 0 && c.err == nil {
		c.write(make([]byte, 512-r))
	}
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

// unixPerm converts Go permission bits (including setuid, setgid and
// sticky) into the low 12 bits of a Unix mode.
func unixPerm(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}
