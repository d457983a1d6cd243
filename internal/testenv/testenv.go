package testenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf/probe"

	"golang.org/x/sys/unix"
)

// Environment variables that turn skips into failures.
const (
	EnvRequirePrivileged = "KFM_REQUIRE_PRIVILEGED"
	EnvRequireEXT        = "KFM_REQUIRE_EXT"
	// EnvInVM is set by the kernel-VM init script; tests may read it to
	// report which kernel they ran on.
	EnvInVM = "KFM_IN_VM"
)

func required(name string) bool {
	v := os.Getenv(name)
	return v != "" && v != "0" && !strings.EqualFold(v, "false")
}

// skipOrFail skips the test with msg, or fails it when env demands that the
// capability is present.
func skipOrFail(tb testing.TB, env, msg string) {
	tb.Helper()
	if required(env) {
		tb.Fatalf("%s (%s=1 forbids skipping)", msg, env)
	}
	tb.Skip(msg)
}

// RequirePrivileged skips (or, under KFM_REQUIRE_PRIVILEGED=1, fails) tb
// unless the process runs as root.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(tb, EnvRequirePrivileged, "test needs root (run as root, e.g. `sudo make test-host`)")
	}
}

// RequireEXT skips tb when the kernel refuses BPF_PROG_TYPE_EXT (freplace)
// programs, as the sandbox of the development and CI hosts does. Inside the
// kernel VMs KFM_REQUIRE_EXT=1 is set and the same condition fails the test.
func RequireEXT(tb testing.TB) {
	tb.Helper()
	RequirePrivileged(tb)
	if err := probe.EXT(); err != nil {
		skipOrFail(tb, EnvRequireEXT, "kernel refuses freplace here ("+err.Error()+"); freplace tests run in the kernel VMs: make test-kernels")
	}
}

// BPFFS mounts a private instance of the BPF filesystem in a temporary
// directory and unmounts it when the test ends. Every mount of bpffs is its
// own instance, so pins made by one test are invisible to every other test
// and to the host's /sys/fs/bpf.
func BPFFS(tb testing.TB) string {
	tb.Helper()
	RequirePrivileged(tb)
	dir := filepath.Join(tb.TempDir(), "bpffs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		tb.Fatalf("mount bpffs at %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			tb.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
	return dir
}

// EnvRequireTools turns a missing external tool (RequireTool) from a skip
// into a failure; `make test` sets it.
const EnvRequireTools = "KFM_REQUIRE_TOOLS"

// RequireTool returns the path of the command-line tool name, looked up
// first in $HOME/.cache/kfm/bin (where scripts/deps.sh installs Go tools),
// then in PATH. When it is missing the test skips, or fails under
// KFM_REQUIRE_TOOLS=1.
func RequireTool(tb testing.TB, name string) string {
	tb.Helper()
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "kfm", "bin", name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	skipOrFail(tb, EnvRequireTools, name+" is not installed (run `make deps`, which installs it into $HOME/.cache/kfm/bin)")
	return ""
}

// ControlPlaneVersion is the Kubernetes version of the control plane that
// scripts/controlplane.sh (run by `make deps`) builds for tests.
const ControlPlaneVersion = "v1.37.2"

// ControlPlane returns the directory holding the kube-apiserver and etcd
// binaries for controller-runtime's envtest: KUBEBUILDER_ASSETS when set,
// else $HOME/.cache/kfm/controlplane/<ControlPlaneVersion>, where `make deps`
// builds them. When they are missing the test skips, or fails under
// KFM_REQUIRE_TOOLS=1.
func ControlPlane(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".cache", "kfm", "controlplane", ControlPlaneVersion)
		}
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			skipOrFail(tb, EnvRequireTools, name+" "+ControlPlaneVersion+" is not built in "+dir+" (run `make deps`, which builds the control plane with scripts/controlplane.sh, or set KUBEBUILDER_ASSETS)")
			return ""
		}
	}
	return dir
}
