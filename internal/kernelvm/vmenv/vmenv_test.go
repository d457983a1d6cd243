package vmenv_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/testenv"
)

// inVM skips the test outside the kernel VMs: it checks the VM image, not
// the host.
func inVM(t *testing.T) string {
	t.Helper()
	v := os.Getenv(testenv.EnvInVM)
	if v == "" {
		t.Skipf("checks the kernel-VM environment; runs only inside the VMs (%s unset; make test-kernels)", testenv.EnvInVM)
	}
	testenv.RequirePrivileged(t)
	return v
}

// run runs a command and returns its combined output; failure fails t.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mounts maps mount points to file-system types, from /proc/self/mounts.
func mounts(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 3 {
			m[fields[1]] = fields[2]
		}
	}
	return m
}

func TestReportsKernel(t *testing.T) {
	v := inVM(t)
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != v {
		t.Errorf("%s=%q, but the kernel is %q", testenv.EnvInVM, v, got)
	}
	for _, env := range []string{testenv.EnvRequireEXT, testenv.EnvRequirePrivileged} {
		if os.Getenv(env) != "1" {
			t.Errorf("%s=%q, want 1 inside the VMs", env, os.Getenv(env))
		}
	}
}

func TestMounts(t *testing.T) {
	inVM(t)
	m := mounts(t)
	for dir, fstype := range map[string]string{
		"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/sys/fs/bpf": "bpf",
		"/run": "tmpfs", "/tmp": "tmpfs", "/sys/fs/cgroup": "cgroup2",
	} {
		if m[dir] != fstype {
			t.Errorf("%s: mounted %q, want %s", dir, m[dir], fstype)
		}
	}
	if p, err := filepath.EvalSymlinks("/var/run/netns"); err != nil || p != "/run/netns" {
		t.Errorf("/var/run/netns resolves to %q (%v), want /run/netns", p, err)
	}
}

func TestModules(t *testing.T) {
	inVM(t)
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"veth", "sch_ingress", "cls_bpf"} {
		loaded := regexp.MustCompile(`(?m)^` + mod + ` `).Match(b)
		_, statErr := os.Stat("/sys/module/" + mod)
		if !loaded && statErr != nil {
			t.Errorf("module %s is neither loaded nor built in", mod)
		}
	}
}

func TestToolsOnPath(t *testing.T) {
	inVM(t)
	// sh must be bash: busybox sh runs its own applets (such as an ip
	// without netns support) before PATH.
	out := run(t, "sh", "-c", `readlink /proc/$$/exe; command -v ip; ip -V`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || lines[0] != "/usr/bin/bash" {
		t.Errorf("sh runs %q, want /usr/bin/bash", lines[0])
	}
	if len(lines) >= 3 && (!strings.HasPrefix(lines[1], "/usr/") || !strings.Contains(lines[2], "iproute2")) {
		t.Errorf("ip on PATH is %q (%q), want iproute2's", lines[1], lines[2])
	}
	run(t, "bpftool", "version")
	// xdp-loader exits 1 after printing its version; the output proves
	// that it and its libraries load.
	ver, _ := exec.Command("xdp-loader", "status", "--version").CombinedOutput()
	if !regexp.MustCompile(`xdp-loader version \S+ using libbpf version \d+\.\d+`).Match(ver) {
		t.Errorf("xdp-loader status --version printed %q", ver)
	}
}

// vethPair creates a veth pair with unique names and removes it at cleanup.
func vethPair(t *testing.T) (string, string) {
	t.Helper()
	a, b := fmt.Sprintf("kv%da", os.Getpid()%100000), fmt.Sprintf("kv%db", os.Getpid()%100000)
	run(t, "ip", "link", "add", a, "type", "veth", "peer", "name", b)
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() })
	run(t, "ip", "link", "set", a, "up")
	run(t, "ip", "link", "set", b, "up")
	return a, b
}

func TestNetns(t *testing.T) {
	inVM(t)
	ns := fmt.Sprintf("kfm-vmenv-%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	_, b := vethPair(t)
	run(t, "ip", "link", "set", b, "netns", ns)
	out := run(t, "ip", "-n", ns, "link", "show", b)
	if !strings.Contains(out, b) {
		t.Errorf("veth end %s not inside netns %s:\n%s", b, ns, out)
	}
	if _, err := os.Stat("/run/netns/" + ns); err != nil {
		t.Errorf("netns not pinned under /run/netns: %v", err)
	}
}

// TestXDPLoaderDispatcher proves that xdp-tools works in the VM: two
// programs attach to one interface through libxdp's dispatcher, which
// replaces its slots with freplace (BPF_PROG_TYPE_EXT) programs and pins
// itself under /sys/fs/bpf/xdp.
func TestXDPLoaderDispatcher(t *testing.T) {
	inVM(t)
	run(t, "xdp-loader", "status", "lo")
	a, _ := vethPair(t)
	objs := []string{"/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_all.o", "/usr/lib/x86_64-linux-gnu/bpf/xdpdump_xdp.o"}
	t.Cleanup(func() { exec.Command("xdp-loader", "unload", "--all", a).Run() })
	run(t, "xdp-loader", append([]string{"load", "-m", "skb", a}, objs...)...)
	status := run(t, "xdp-loader", "status", a)
	t.Logf("xdp-loader status %s:\n%s", a, status)
	for _, want := range []string{"xdp_dispatcher", "xdpfilt_alw_all", "xdpdump"} {
		if !strings.Contains(status, want) {
			t.Errorf("xdp-loader status %s lacks %q", a, want)
		}
	}
	pins, _ := filepath.Glob("/sys/fs/bpf/xdp/dispatch-*")
	if len(pins) == 0 {
		t.Errorf("libxdp pinned no dispatcher under /sys/fs/bpf/xdp")
	}
	progs := run(t, "bpftool", "prog", "show")
	if !strings.Contains(progs, "xdp_dispatcher") || !strings.Contains(progs, "ext ") {
		t.Errorf("bpftool prog show lists no dispatcher with ext programs:\n%s", progs)
	}
	run(t, "xdp-loader", "unload", "--all", a)
	if status := run(t, "xdp-loader", "status", a); strings.Contains(status, "xdp_dispatcher") {
		t.Errorf("dispatcher still attached after unload --all:\n%s", status)
	}
}
