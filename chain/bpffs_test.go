package chain

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mount tables as /proc/self/mountinfo shows them on a host and under `ip
// netns exec blue` (iproute2 mounts a fresh sysfs with the namespace's name
// as its source).
const (
	hostMounts = `22 26 0:21 / /sys rw,relatime shared:2 - sysfs sysfs rw
26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
44 22 0:39 / /sys/fs/bpf rw,relatime shared:3 - bpf bpf rw,mode=700
`
	netnsExecMounts = `52 51 254:0 / / rw,relatime master:1 - ext4 /dev/vda rw
54 52 0:20 / /proc rw,relatime - proc proc rw
72 52 0:39 / /tmp/bpffs rw,relatime - bpf bpf rw,mode=700
55 52 0:40 / /sys rw,relatime - sysfs blue rw
`
	netnsExecRemounted = netnsExecMounts + `56 55 0:41 / /sys/fs/bpf rw,relatime - bpf bpf rw,mode=700
`
	spacedMounts = `55 52 0:40 / /my\040sys rw,relatime - sysfs blue\040ns rw
`
)

func TestSysfsUnder(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, mounts, path string
		want               string // the source found, "" for none
	}{
		{"host", hostMounts, "/sys/fs/bpf", ""},
		{"ip netns exec, default bpffs", netnsExecMounts, "/sys/fs/bpf", "blue"},
		{"ip netns exec, bpffs mounted on top", netnsExecRemounted, "/sys/fs/bpf", "blue"},
		{"ip netns exec, bpffs elsewhere", netnsExecMounts, "/tmp/bpffs", ""},
		{"ip netns exec, /sysfoo is not /sys", netnsExecMounts, "/sysfoo/bpf", ""},
		{"escaped names", spacedMounts, "/my sys/fs/bpf", "blue ns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mi := filepath.Join(dir, "mountinfo")
			if err := os.WriteFile(mi, []byte(tc.mounts), 0o644); err != nil {
				t.Fatal(err)
			}
			src, _, ok := sysfsUnder(tc.path, mi)
			if ok != (tc.want != "") || src != tc.want {
				t.Errorf("sysfsUnder(%s) = %q, %v; want %q", tc.path, src, ok, tc.want)
			}
			err := checkHostBPFFS(tc.path, false, "/nonexistent", mi)
			if tc.want != "" {
				if !errors.Is(err, ErrPrivateBPFFS) || !strings.Contains(err.Error(), "--netns NAME") {
					t.Errorf("checkHostBPFFS: %v; want ErrPrivateBPFFS pointing to --netns", err)
				}
			} else if err != nil {
				t.Errorf("checkHostBPFFS: %v", err)
			}
		})
	}
}
