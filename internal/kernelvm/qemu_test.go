package kernelvm

import (
	"strings"
	"testing"
)

func TestQemuArgs(t *testing.T) {
	for _, tc := range []struct {
		vm          VM
		want, avoid []string
	}{
		{VM{Kernel: "/k/vmlinux", Initramfs: "/w/i.cpio", MemoryMiB: 2048, CPUs: 2},
			[]string{"-accel tcg,thread=single -cpu max", "-smp 2 -m 2048", "-nodefaults", "-no-reboot", "-serial stdio", "-kernel /k/vmlinux -initrd /w/i.cpio", "console=ttyS0", "panic=-1", "quiet"},
			[]string{"kvm", "kfm.shell", "mon:stdio"}},
		{VM{Kernel: "k", Initramfs: "i", MemoryMiB: 1024, CPUs: 1, Shell: true, BootLog: true},
			[]string{"-smp 1 -m 1024", "-serial mon:stdio", "kfm.shell=1"},
			[]string{"quiet"}},
	} {
		args := strings.Join(tc.vm.qemuArgs(), " ")
		for _, w := range tc.want {
			if !strings.Contains(args, w) {
				t.Errorf("qemu %s: lacks %q", args, w)
			}
		}
		for _, a := range tc.avoid {
			if strings.Contains(args, a) {
				t.Errorf("qemu %s: has %q", args, a)
			}
		}
	}
}
