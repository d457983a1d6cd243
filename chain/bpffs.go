package chain

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ensureBPFFS makes sure a BPF filesystem is mounted at dir, mounting one
// if the directory is not on bpffs yet (as libxdp and bpftool do).
func ensureBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bpffs %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpffs %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w (mount it yourself or point --bpffs at a bpffs mount)", dir, err)
	}
	return nil
}
