package chain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrPrivateBPFFS: kfm runs in a mount namespace of its own (typically
// under `ip netns exec`, which remounts /sys) where the BPF filesystem is
// not the host's. Pins made there vanish with the namespace, and the next
// kfm would find its own programs running without pins and take them for
// another tool's. kfm refuses and points to --netns.
var ErrPrivateBPFFS = errors.New("not the host's BPF filesystem")

// ensureBPFFS makes sure a BPF filesystem is mounted at dir, mounting one
// if the directory is not on bpffs yet (as libxdp and bpftool do). It
// refuses (ErrPrivateBPFFS) to use or mount a BPF filesystem that is not
// the host's (see checkHostBPFFS).
func ensureBPFFS(dir string) error {
	return ensureBPFFSFor(dir, "/proc/1", "/proc/self/mountinfo")
}

// ensureBPFFS is ensureBPFFS(m.bpffs), checked once per Manager: the
// check reads the mount tables, and a command that reads many hooks
// would read them once per hook.
func (m *Manager) ensureBPFFS() error {
	if m.bpffsOK {
		return nil
	}
	if err := ensureBPFFS(m.bpffs); err != nil {
		return err
	}
	m.bpffsOK = true
	return nil
}

// ensureBPFFSFor is ensureBPFFS with the host's init process at initProc
// (a /proc/PID directory) and this process's mount table at mountinfo.
func ensureBPFFSFor(dir, initProc, mountinfo string) error {
	var st unix.Statfs_t
	err := unix.Statfs(dir, &st)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bpffs %s: %w", dir, err)
	}
	mounted := err == nil && st.Type == unix.BPF_FS_MAGIC
	if err := checkHostBPFFS(dir, mounted, initProc, mountinfo); err != nil {
		return err
	}
	if mounted {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpffs %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w (mount it yourself or point --bpffs at a bpffs mount)", dir, err)
	}
	return nil
}

// checkHostBPFFS refuses a BPF filesystem at dir (mounted, or about to be)
// that is not the host's. Two signs, either is enough:
//
//   - kfm runs in a mount namespace other than init's (PID 1), and init
//     sees no BPF filesystem at dir, or another instance than kfm does. In
//     init's mount namespace (the usual case) nothing is checked, and a
//     container that bind-mounts the host's /sys/fs/bpf sees the same
//     instance. Where /proc/1 cannot be read (no CAP_SYS_PTRACE, some
//     sandboxes), this sign is not available.
//   - dir lies on a sysfs mount whose source is not "sysfs": `ip netns exec
//     NAME` unshares the mount namespace and mounts a fresh /sys with NAME
//     as its source (iproute2's netns_switch), which hides the host's
//     /sys/fs/bpf; any BPF filesystem under it is private to that mount
//     namespace and vanishes with it.
func checkHostBPFFS(dir string, mounted bool, initProc, mountinfo string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	what := "would mount a fresh BPF filesystem at " + dir + " that only this process sees"
	if mounted {
		what = "the BPF filesystem at " + dir + " is a private one, not the host's"
	}
	refuse := func(why string) error {
		return fmt.Errorf("%s, and %s: %w; pins made there vanish with it and the next kfm would take its own programs for another tool's. "+
			"Run kfm outside `ip netns exec` and name the namespace instead: kfm ... --netns NAME (or netns: in kfm.yaml)", why, what, ErrPrivateBPFFS)
	}
	if src, mp, ok := sysfsUnder(abs, mountinfo); ok {
		return refuse(fmt.Sprintf("kfm runs under `ip netns exec %s` (which mounted a fresh %s)", src, mp))
	}
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	init, err2 := os.Readlink(filepath.Join(initProc, "ns/mnt"))
	if err1 != nil || err2 != nil || self == init {
		return nil
	}
	hostPath := filepath.Join(initProc, "root", abs)
	var hst unix.Statfs_t
	hostErr := unix.Statfs(hostPath, &hst)
	if hostErr != nil && !errors.Is(hostErr, os.ErrNotExist) {
		return nil // cannot look: do not guess
	}
	hostMounted := hostErr == nil && hst.Type == unix.BPF_FS_MAGIC
	if mounted && hostMounted {
		var a, b unix.Stat_t
		if unix.Stat(dir, &a) != nil || unix.Stat(hostPath, &b) != nil || a.Dev == b.Dev {
			return nil // the same instance (e.g. a bind mount of the host's)
		}
	}
	return refuse("kfm runs in a mount namespace of its own (as under `ip netns exec`)")
}

// sysfsUnder looks in the mount table mountinfo for a sysfs mount at or
// above path whose source is not "sysfs" (the mark of `ip netns exec`), and
// returns its source and mount point.
func sysfsUnder(path, mountinfo string) (source, mountPoint string, ok bool) {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return "", "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - TYPE SOURCE SUPER
		pre, post, found := strings.Cut(line, " - ")
		if !found {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 2 || g[0] != "sysfs" {
			continue
		}
		mp := unescapeMount(f[4])
		if mp != "/" && path != mp && !strings.HasPrefix(path, mp+"/") {
			continue
		}
		if src := unescapeMount(g[1]); src != "sysfs" {
			return src, mp, true
		}
	}
	return "", "", false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}
