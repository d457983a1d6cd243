package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf/analyze"
	"github.com/kfm-project/kfm/bpf/compat"
	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testprogs"
	"github.com/kfm-project/kfm/internal/testregistry"
)

// testprog writes a test program's object to a temporary file.
func testprog(t *testing.T, name string) string {
	t.Helper()
	data, err := testprogs.Object(name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".o")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The capability policy on the install and pull paths, with a real
// registry, real signatures and the real kernel: a program calling
// bpf_probe_read_kernel is refused by the built-in default (exit 3, the
// helper and the rule named) from the registry and from a local file; a
// rule lifting it lets it install; readOnlyObserver refuses the port filter
// and accepts the counter.
func TestCapabilityPolicyInstall(t *testing.T) {
	h := newHost(t)
	probe := testprog(t, "xdp_probe_read")
	h.publish(probe, "net/probe", "1.0.0", "")
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	policy := func(capabilities string) {
		t.Helper()
		p := fmt.Sprintf("version: 1\nrules:\n  - match: '%s/**'\n    keys: [%s]\n%s", h.reg.Host(), h.pub, capabilities)
		if err := os.WriteFile(filepath.Join(h.configDir, "policy.yaml"), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(want []string, args ...string) {
		t.Helper()
		_, stderr, code := h.kfm(args...)
		if code != exitTrust {
			t.Fatalf("kfm %s: exit %d, want %d (%s)", strings.Join(args, " "), code, exitTrust, stderr)
		}
		for _, w := range want {
			if !strings.Contains(stderr, w) {
				t.Errorf("kfm %s: message %q does not say %q", strings.Join(args, " "), stderr, w)
			}
		}
	}

	policy("")
	rule := fmt.Sprintf("policy.yaml:3 (%s/**)", h.reg.Host())
	refused([]string{"calls helper bpf_probe_read_kernel, which kfm denies by default", "allowHelpers: [bpf_probe_read_kernel]", rule},
		"install", h.reg.Ref("net/probe", "1.0.0"), "--iface", h.iface)
	refused([]string{"calls helper bpf_probe_read_kernel", "localCapabilities"},
		"install", probe, "--iface", h.iface)
	refused([]string{"bpf_probe_read_kernel"}, "pull", h.reg.Ref("net/probe", "1.0.0"))
	if _, err := os.Stat(filepath.Join(h.configDir, "kfm.yaml")); err == nil {
		if m := h.readConfig("kfm.yaml"); strings.Contains(m, "probe") {
			t.Errorf("a refused program reached kfm.yaml:\n%s", m)
		}
	}
	if hs := h.status(); hookOf(hs, h.iface, "xdp") != nil {
		t.Fatalf("a refused install changed the kernel: %+v", hs)
	}

	// A clean program installs under the same policy.
	h.mustKFM("install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--name", "count")

	// A rule that lifts the helper lets the program load (root has
	// CAP_PERFMON).
	policy("    capabilities: {allowHelpers: [bpf_probe_read_kernel]}\n")
	h.mustKFM("install", h.reg.Ref("net/probe", "1.0.0"), "--iface", h.iface, "--name", "probe")
	if got := chainView(hookOf(h.status(), h.iface, "xdp")); len(got) != 2 {
		t.Fatalf("chain %v, want count and probe", got)
	}

	// With the lift gone, the programs a chain already runs are not judged
	// again when another program joins or leaves it (no more than their
	// signatures are: removal never depends on the policy), but
	// `kfm apply --locked`, which verifies every program as at boot,
	// refuses the one the policy no longer allows.
	policy("    capabilities: {readOnlyObserver: true}\n")
	h.mustKFM("install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--name", "count2")
	refused([]string{"xdp_probe_read calls helper bpf_probe_read_kernel"}, "apply", "--locked")
	h.mustKFM("remove", "probe", "--iface", h.iface)
	h.mustKFM("remove", "count2", "--iface", h.iface)
	if got := chainView(hookOf(h.status(), h.iface, "xdp")); len(got) != 1 {
		t.Fatalf("chain %v, want count alone", got)
	}

	// readOnlyObserver: the port filter drops, the counter only looks.
	policy("    capabilities: {readOnlyObserver: true}\n")
	refused([]string{"xdp_portfilter is not a proven read-only observer (may return drop; readOnlyObserver: true)", rule},
		"install", h.reg.Ref("net/portfilter", "1.0.0"), "--iface", h.iface)
	h.mustKFM("install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--name", "count2")

	h.mustKFM("remove", "count", "--iface", h.iface)
	h.mustKFM("remove", "count2", "--iface", h.iface)
}

// kfm publish writes the computed capabilities into the bundle config;
// kfm inspect shows kfm's own analysis for a file and for a reference (text
// and JSON), and with --kernel whether each program runs on this host.
func TestInspectCapabilities(t *testing.T) {
	testenv.RequirePrivileged(t) // --kernel probes load programs
	cliEnv(t)
	r := testregistry.Start(t, testregistry.Options{})
	ref := r.Ref("net/portfilter", "1.0.0")
	if _, stderr, code := kfm(t, "", "publish", samplesDir+"xdp_portfilter.o", ref); code != exitOK {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}

	out, stderr, code := kfm(t, "", "inspect", ref, "-o", "json", "--kernel")
	if code != exitOK {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	var got struct {
		Config struct {
			Programs []struct {
				Function     string                `json:"function"`
				Capabilities *analyze.Capabilities `json:"capabilities"`
			} `json:"programs"`
		} `json:"config"`
		Capabilities map[string]*analyze.Capabilities `json:"capabilities"`
		Kernel       []*compat.Report                 `json:"kernel"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("inspect -o json: %v\n%s", err, out)
	}
	if len(got.Config.Programs) != 1 || got.Config.Programs[0].Capabilities == nil {
		t.Fatalf("the bundle config has no capabilities: %s", out)
	}
	published := got.Config.Programs[0].Capabilities
	c := got.Capabilities["xdp_portfilter"]
	if c == nil || !slices.Equal(c.Helpers, []string{"bpf_map_lookup_elem"}) || !slices.Equal(c.Returns, []int32{1, 2}) || c.ReadOnlyObserver || c.WritesPacket {
		t.Fatalf("computed capabilities: %+v", c)
	}
	if published.Instructions != c.Instructions || !slices.Equal(published.Helpers, c.Helpers) {
		t.Errorf("published %+v, computed %+v", published, c)
	}
	if len(got.Kernel) != 1 || !got.Kernel[0].OK {
		t.Errorf("--kernel: %+v", got.Kernel)
	}

	text := func(args ...string) string {
		t.Helper()
		out, stderr, code := kfm(t, "", args...)
		if code != exitOK {
			t.Fatalf("kfm %v: exit %d: %s", args, code, stderr)
		}
		return out
	}
	for _, out := range []string{text("inspect", ref), text("inspect", samplesDir+"xdp_portfilter.o")} {
		for _, want := range []string{"CAPABILITIES (computed by kfm from the bytecode)", "helpers:         bpf_map_lookup_elem", "returns:         drop, pass", "read-only:       no: may return drop"} {
			if !strings.Contains(out, want) {
				t.Errorf("inspect output lacks %q:\n%s", want, out)
			}
		}
	}
	out = text("inspect", samplesDir+"xdp_count.o", "--kernel")
	for _, want := range []string{"read-only:       yes (proven)", "xdp_count: runs on this host"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect --kernel output lacks %q:\n%s", want, out)
		}
	}
}

// A bundle whose publisher declares a minimum kernel newer than the
// running one is refused before anything loads, with the version named, and
// the hook keeps what it ran; `kfm inspect --kernel` says the same. (The
// missing-helper case runs in the kernel VMs: bpf/compat's
// TestHelperMissing on 5.10.)
func TestKernelCompatibilityInstall(t *testing.T) {
	h := newHost(t)
	bf := filepath.Join(t.TempDir(), "bundle.yaml")
	if err := os.WriteFile(bf, []byte("programs:\n  - function: xdp_count\n    minKernel: \"99.0\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.publish(samplesDir+"xdp_count.o", "net/future", "1.0.0", "", "--bundle", bf)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.mustKFM("install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--name", "count")
	before := chainView(hookOf(h.status(), h.iface, "xdp"))

	_, stderr, code := h.kfm("install", h.reg.Ref("net/future", "1.0.0"), "--iface", h.iface, "--name", "future")
	if code != exitFailure || !strings.Contains(stderr, "xdp_count cannot run on this kernel") || !strings.Contains(stderr, "kernel 99.0 or newer (the publisher's minimum)") {
		t.Fatalf("install: exit %d, %s; want exit 1 naming the minimum kernel", code, stderr)
	}
	if after := chainView(hookOf(h.status(), h.iface, "xdp")); !slices.Equal(after, before) {
		t.Errorf("a refused install changed the chain: %v -> %v", before, after)
	}
	out := h.mustKFM("inspect", h.reg.Ref("net/future", "1.0.0"), "--kernel")
	if !strings.Contains(out, "xdp_count: cannot run: lacks kernel 99.0 or newer") {
		t.Errorf("inspect --kernel:\n%s", out)
	}
	h.mustKFM("remove", "count", "--iface", h.iface)
}
