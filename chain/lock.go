package chain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLockTimeout: another kfm process held the host lock for longer than
// the caller was willing to wait.
var ErrLockTimeout = errors.New("timed out waiting for the kfm host lock")

// hostLock serialises kfm processes on one host: flock(LOCK_EX) on
// <state-dir>/lock. The holder writes its pid into the file so that a
// waiting process can say whom it waits for.
type hostLock struct {
	f *os.File
}

// acquireLock takes the host lock, waiting up to timeout (0: forever, until
// ctx ends). waiting is called once if the lock is busy, with a message
// that says who holds it.
func acquireLock(ctx context.Context, dir string, timeout time.Duration, waiting func(msg string)) (*hostLock, error) {
	if err := mkdirPrivate(dir, waiting); err != nil {
		if errors.Is(err, ErrStateDir) {
			return nil, err
		}
		return nil, stateDirError(dir, err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, stateDirError(dir, err)
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		holder := lockHolder(f)
		if !told && waiting != nil {
			waiting(fmt.Sprintf("waiting for the kfm host lock %s (held by %s)", path, holder))
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-deadline:
			f.Close()
			return nil, fmt.Errorf("%w %s after %s (held by %s): try again, or raise --lock-timeout", ErrLockTimeout, path, timeout, holder)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &hostLock{f: f}, nil
}

// ErrStateDir: the state directory cannot be written (read-only, full, or
// not kfm's to write). kfm fails before it changes anything.
var ErrStateDir = errors.New("state directory not writable")

// stateDirError explains a failure to write the state directory dir.
func stateDirError(dir string, err error) error {
	switch {
	case errors.Is(err, ErrStateDir):
		return err
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("%w: %s is on a read-only file system (%w): kfm keeps its host lock and state there; make it writable or point --state-dir / KFM_STATE_DIR at a writable directory (by default /run/kfm, on tmpfs)", ErrStateDir, dir, err)
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%w: the file system of %s is full (%w): free space there and run the command again", ErrStateDir, dir, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w: %s (%w): run kfm as root, or point --state-dir / KFM_STATE_DIR at a directory kfm may write", ErrStateDir, dir, err)
	}
	return fmt.Errorf("state directory %s: %w", dir, err)
}

// mkdirPrivate makes dir (mode 0700 whatever the umask: the host state is
// kfm's alone) if it does not exist. An existing directory of kfm's user
// that others may write into (an old /run/kfm made under another umask, a
// directory made by hand) is tightened to 0700, and notify is told; one of
// another user that others may write into is refused: anyone could plant
// a host state there.
func mkdirPrivate(dir string, notify func(string)) error {
	st, err := os.Stat(dir)
	switch {
	case err == nil && st.IsDir():
		perm := st.Mode().Perm()
		if perm&0o022 == 0 {
			return nil
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
			return fmt.Errorf("%w: %s (mode %#o) belongs to user %d and others may write into it: kfm keeps its host lock and state there; make it %d's with mode 0700, or point --state-dir / KFM_STATE_DIR at another directory", ErrStateDir, dir, perm, sys.Uid, os.Geteuid())
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
		if notify != nil {
			notify(fmt.Sprintf("made the state directory %s private (mode %#o, was %#o): the host state is kfm's alone", dir, 0o700, perm))
		}
		return nil
	case err == nil:
		return fmt.Errorf("%w: %s is not a directory", ErrStateDir, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

func lockHolder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid := strings.TrimSpace(string(b[:n]))
	if pid == "" {
		return "another kfm process"
	}
	return "kfm pid " + pid
}

func (l *hostLock) release() error {
	l.f.Truncate(0)
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	return l.f.Close()
}
