package main

// Which capabilities kfm needs: an install works with exactly the set the
// DaemonSet grants, and fails with a clear error without any one of them.

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/manifests"
)

// capsEnv makes the kfm test child run with only the listed capabilities
// (names as in capabilities(7), comma-separated).
const capsEnv = "KFM_E2E_CAPS"

// stayInNetns tells a re-executed child that it already is in its network
// namespace (entering one needs CAP_SYS_ADMIN, which it may lack).
const stayInNetns = "-"

var capNames = map[string]int{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"CAP_FOWNER": unix.CAP_FOWNER, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
	"CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK,
	"CAP_PERFMON": unix.CAP_PERFMON, "CAP_BPF": unix.CAP_BPF, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE,
}

// execWithCaps runs on the child's locked main thread, inside its network
// namespace: it drops every capability but caps from the thread's bounding
// set and executes the test binary again, which then starts with at most
// caps (root's capabilities after execve are limited by the bounding set).
func execWithCaps(caps string) int {
	keep := map[int]bool{}
	for _, c := range strings.Split(caps, ",") {
		n, ok := capNames[strings.ToUpper(strings.TrimSpace(c))]
		if !ok {
			fmt.Fprintf(os.Stderr, "kfm test child: unknown capability %q\n", c)
			return 125
		}
		keep[n] = true
	}
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			fmt.Fprintf(os.Stderr, "kfm test child: drop capability %d: %v\n", c, err)
			return 125
		}
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kfm test child: %v\n", err)
		return 125
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, capsEnv+"=") && !strings.HasPrefix(e, asKFMEnv+"=") {
			env = append(env, e)
		}
	}
	env = append(env, asKFMEnv+"="+stayInNetns)
	err = syscall.Exec(exe, os.Args, env)
	fmt.Fprintf(os.Stderr, "kfm test child: exec: %v\n", err)
	return 125
}

// daemonSetCaps reads the capabilities the DaemonSet adds.
func daemonSetCaps(t *testing.T) []string {
	t.Helper()
	ds, err := manifests.FS.ReadFile("kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(ds), "add: [")
	if i < 0 {
		t.Fatal("daemonset.yaml: no capabilities add: [...] list")
	}
	list := string(ds[i+len("add: ["):])
	list = list[:strings.Index(list, "]")]
	var out []string
	for _, c := range strings.Split(list, ",") {
		out = append(out, "CAP_"+strings.TrimSpace(c))
	}
	return out
}

func TestCapabilities(t *testing.T) {
	h := newHost(t)
	ref := h.reg.Ref("net/count", "1.0.0")
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	// The child runs wholly inside the interface's namespace (see
	// execWithCaps), away from the registry: it installs from the cache.
	h.mustKFM("pull", ref)
	caps := daemonSetCaps(t)
	t.Logf("the DaemonSet grants %v", caps)
	install := func(caps []string) (string, int) {
		t.Helper()
		p := h.start([]string{capsEnv + "=" + strings.Join(caps, ",")}, "install", ref, "--iface", h.iface, "--name", "count", "--offline")
		code, sig := p.wait(t, time.Minute)
		if sig != nil {
			t.Fatalf("kfm install killed by %v: %s", sig, p.stderr.String())
		}
		return p.stderr.String(), code
	}
	clean := func() {
		t.Helper()
		if hs := hookOf(h.status(), h.iface, "xdp"); hs != nil {
			h.mustKFM("remove", "count", "--iface", h.iface)
		}
	}
	for _, drop := range caps {
		without := slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == drop })
		// Twice: the first install of a chain and a change of a running
		// one need different operations.
		var stderr string
		code := exitOK
		for i := 0; i < 2 && code == exitOK; i++ {
			stderr, code = install(without)
		}
		clean()
		if code == exitOK {
			t.Errorf("without %s: kfm installs and reinstalls: %s is not needed", drop, drop)
			continue
		}
		if !strings.Contains(stderr, "operation not permitted") || !strings.Contains(stderr, "kfm needs "+neededCaps) {
			t.Errorf("without %s: exit %d, and the error does not say what was not permitted and what kfm needs:\n%s", drop, code, stderr)
		}
		t.Logf("without %s: exit %d: %s", drop, code, strings.TrimSpace(stderr))
	}
	if stderr, code := install(caps); code != exitOK {
		t.Fatalf("with %v: kfm install: exit %d: %s", caps, code, stderr)
	}
	if hs := hookOf(h.status(), h.iface, "xdp"); hs == nil || len(hs.Programs) != 1 {
		t.Errorf("with %v: status after install: %+v", caps, hs)
	}
}
