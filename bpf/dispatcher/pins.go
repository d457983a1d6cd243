package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where libxdp looks for the BPF filesystem unless
// LIBXDP_BPFFS says otherwise.
const DefaultBPFFS = "/sys/fs/bpf"

// xdpDir is libxdp's state directory under the BPF filesystem,
// <bpffs>/xdp: it holds one directory per dispatcher and is the lock every
// libxdp-protocol tool takes while it reads or writes pins.
func xdpDir(bpffs string) string {
	if bpffs == "" {
		bpffs = DefaultBPFFS
	}
	return filepath.Join(bpffs, "xdp")
}

// PinDir is where the component programs of dispatcher id on interface
// ifindex are pinned: <bpffs>/xdp/dispatch-<ifindex>-<id>.
func PinDir(bpffs string, ifindex int, id ebpf.ProgramID) string {
	return filepath.Join(xdpDir(bpffs), fmt.Sprintf("dispatch-%d-%d", ifindex, id))
}

// The pins of slot n in a dispatcher's directory: the component program
// and the freplace link that attaches it to the slot.
func progPin(dir string, n int) string { return filepath.Join(dir, fmt.Sprintf("prog%d-prog", n)) }
func linkPin(dir string, n int) string { return filepath.Join(dir, fmt.Sprintf("prog%d-link", n)) }

// parsePinDir returns the interface index and dispatcher ID a directory
// name encodes.
func parsePinDir(name string) (ifindex int, id ebpf.ProgramID, ok bool) {
	// dispatch-<digits>-<digits>, parsed without a regexp compiled at
	// start-up.
	rest, ok := strings.CutPrefix(name, "dispatch-")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(rest, "-")
	if !ok || !allDigits(a) || !allDigits(b) {
		return 0, 0, false
	}
	i, err1 := strconv.Atoi(a)
	d, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return i, ebpf.ProgramID(d), true
}

// lock takes libxdp's lock: flock(LOCK_EX) on <bpffs>/xdp, which it
// creates (mode 0700, as libxdp does) when missing. The returned function
// releases the lock.
func lock(ctx context.Context, bpffs string) (unlock func(), err error) {
	dir := xdpDir(bpffs)
	if err := checkBPFFS(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create libxdp state directory: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open lock directory %s: %w", dir, err)
	}
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			unix.Close(fd)
			return nil, fmt.Errorf("waiting for the lock on %s (held by another kfm or libxdp process): %w", dir, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return func() {
		_ = unix.Flock(fd, unix.LOCK_UN)
		unix.Close(fd)
	}, nil
}

// checkBPFFS reports a clear error when dir is not a mounted BPF
// filesystem (pins would fail with a confusing one).
func checkBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("BPF filesystem %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s is not a BPF filesystem: mount one there (mount -t bpf bpf %s) or choose another with --bpffs", dir, dir)
	}
	return nil
}

// objPin pins the BPF object behind fd at path (BPF_OBJ_PIN). cilium/ebpf's
// Pin methods move an object's previous pin instead of adding one, which
// the protocol cannot use: a kept component stays pinned in the old
// dispatcher's directory until the new one is attached.
func objPin(fd int, path string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	attr := struct {
		pathname  uint64
		bpfFD     uint32
		fileFlags uint32
		pathFD    int32
		_         uint32
	}{pathname: uint64(uintptr(unsafe.Pointer(p))), bpfFD: uint32(fd)}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_PIN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(p)
	if errno != 0 {
		return fmt.Errorf("pin %s: %w", path, errno)
	}
	return nil
}

// removePinDir removes a dispatcher directory and every pin in it. A
// missing directory is not an error.
func removePinDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
