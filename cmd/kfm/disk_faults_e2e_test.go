package main

// Disk and filesystem faults (issue 14, item 3), on the harness of
// e2e_test.go: real mounts the tests make and remove (a private bpffs
// unmounted under kfm, a tmpfs that fills up, read-only bind mounts), never
// a mock. Each case checks the error a user reads, that nothing is left
// half-written, and that the next run repairs what the fault broke.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/chain"
	"golang.org/x/sys/unix"
)

// threeBackends publishes the counting samples and applies one chain per
// backend the host runs: tailcall on XDP, tcx on tc-ingress, classic tc on
// tc-egress.
func (h *host) threeBackends() {
	h.t.Helper()
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"tc_count.o", "net/tc-count", "1.0.0", "")
	xdp, tcc := h.reg.Ref("net/count", "1.0.0"), h.reg.Ref("net/tc-count", "1.0.0")
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nchains:\n")
	fmt.Fprintf(&b, "  - {interface: %s, hook: xdp, backend: tailcall, programs: [{name: count, ref: %q}]}\n", h.iface, xdp)
	fmt.Fprintf(&b, "  - {interface: %s, hook: tc-ingress, backend: tcx, programs: [{name: count, ref: %q}]}\n", h.iface, tcc)
	fmt.Fprintf(&b, "  - {interface: %s, hook: tc-egress, backend: tc, programs: [{name: count, ref: %q}]}\n", h.iface, tcc)
	h.writeConfig("kfm.yaml", b.String())
	h.mustKFM("apply")
}

// checkThreeBackends asserts that status shows the three chains of
// threeBackends, without drift, that the kernel runs exactly them (nothing
// leaked), and that packets go through the XDP and tc-ingress chains.
func (h *host) checkThreeBackends() {
	h.t.Helper()
	hs := h.status()
	for _, want := range []struct{ hook, backend string }{{"xdp", "tailcall"}, {"tc-ingress", "tcx"}, {"tc-egress", "tc"}} {
		c := hookOf(hs, h.iface, want.hook)
		if c == nil || c.Backend != want.backend || len(c.Programs) != 1 || c.Programs[0].Name != "count" ||
			c.Programs[0].Origin != chain.OriginKFM || len(c.Drift) != 0 {
			h.t.Errorf("%s: status %+v, want count on %s without drift", want.hook, c, want.backend)
		}
	}
	h.checkKernel(hs)
	xdp0, tc0 := h.mapPackets("xdp", "count", "counters", udp), h.mapPackets("tc-ingress", "count", "totals", 0)
	if got := h.traffic(20, 9001)[9001]; got != 20 {
		h.t.Errorf("received %d of 20 datagrams", got)
	}
	if d := h.mapPackets("xdp", "count", "counters", udp) - xdp0; d != 20 {
		h.t.Errorf("the XDP chain counted %d of 20 UDP packets", d)
	}
	if d := h.mapPackets("tc-ingress", "count", "totals", 0) - tc0; d < 20 {
		h.t.Errorf("the tc-ingress chain counted %d packets, want at least 20", d)
	}
}

// TestFaultBPFFSUnmounted: the BPF filesystem is unmounted between two
// runs, taking every pin of kfm with it. What each backend is left with
// differs: tailcall's XDP root stays attached (netlink holds it, and it
// holds its program array) and goes on running the chain without pins;
// tcx links die with their pins (the chain is gone); classic tc filters
// stay attached. kfm status must say for each hook what happened and how to
// repair it, and kfm apply --locked must bring back exactly the locked
// chains, with nothing of the old ones left in the kernel.
func TestFaultBPFFSUnmounted(t *testing.T) {
	h := newHost(t)
	h.threeBackends()
	h.checkThreeBackends()
	if err := unix.Unmount(h.bpffs, 0); err != nil {
		t.Fatal(err)
	}
	// The next kfm mounts a fresh bpffs at the same place (the harness's
	// cleanup unmounts it).
	hs := h.status()
	for _, hook := range []string{"xdp", "tc-ingress", "tc-egress"} {
		c := hookOf(hs, h.iface, hook)
		if c == nil || len(c.Drift) == 0 {
			t.Errorf("%s: status after the unmount: %+v, want a drift that explains it", hook, c)
			continue
		}
		d := c.Drift[0]
		if !strings.Contains(d, "holds no pins of kfm (was it unmounted?)") || !strings.Contains(d, "kfm apply --locked") {
			t.Errorf("%s: drift %q does not say that the pins are gone and how to repair", hook, d)
		}
		if hook == "xdp" && !strings.Contains(d, "still runs here from its root program") {
			t.Errorf("xdp: drift %q does not say that the orphaned root still runs", d)
		}
	}
	out, stderr, code := h.kfm("apply", "--locked")
	if code != exitOK {
		t.Fatalf("apply --locked after the unmount: exit %d\n%s%s", code, out, stderr)
	}
	h.checkThreeBackends()

	// Everything removed: nothing left, the orphan's replacement included.
	h.writeConfig("kfm.yaml", "version: 1\nchains: []\n")
	h.mustKFM("apply")
	h.checkEmpty()
}

// TestFaultPinRemoved: one of kfm's pins is removed by hand, pin after
// pin on the same host. kfm status must report the damaged hook (a drift),
// kfm apply --locked must repair it, and the kernel must then hold exactly
// the three chains (nothing of the damaged one leaks). Last, with every pin
// of kfm removed at once and an empty kfm.yaml, apply takes kfm's orphaned
// XDP root off the interface.
func TestFaultPinRemoved(t *testing.T) {
	h := newHost(t)
	h.threeBackends()
	for _, tc := range []struct{ pin, hook string }{
		{"kfm/tailcall/IFINDEX/xdp/gen-*/chain", "xdp"}, // the program array
		{"kfm/tailcall/IFINDEX/xdp/root", "xdp"},        // orphans the root
		{"kfm/tcx/IFINDEX/tc-ingress/link-*", "tc-ingress"},
		{"kfm/tcx/IFINDEX/tc-ingress/gate", "tc-ingress"},
		{"kfm/tc/IFINDEX/tc-egress/meta", "tc-egress"},
	} {
		matches, _ := filepath.Glob(filepath.Join(h.bpffs, strings.ReplaceAll(tc.pin, "IFINDEX", strconv.Itoa(h.pair.BIfindex))))
		if len(matches) != 1 {
			t.Fatalf("%s: found %v", tc.pin, matches)
		}
		if err := os.Remove(matches[0]); err != nil {
			t.Fatal(err)
		}
		if c := hookOf(h.status(), h.iface, tc.hook); c == nil || len(c.Drift) == 0 {
			t.Errorf("rm %s: status of %s %+v reports nothing", tc.pin, tc.hook, c)
		}
		out, stderr, code := h.kfm("apply", "--locked")
		if code != exitOK {
			t.Fatalf("rm %s: apply --locked: exit %d\n%s%s", tc.pin, code, out, stderr)
		}
		if !strings.Contains(out, tc.hook+" ("+map[string]string{"xdp": "tailcall", "tc-ingress": "tcx", "tc-egress": "tc"}[tc.hook]+"): applied") {
			t.Errorf("rm %s: apply --locked did not change %s:\n%s", tc.pin, tc.hook, out)
		}
		h.checkThreeBackends()
	}

	if err := os.RemoveAll(filepath.Join(h.bpffs, "kfm")); err != nil {
		t.Fatal(err)
	}
	h.writeConfig("kfm.yaml", "version: 1\nchains: []\n")
	h.mustKFM("apply")
	h.checkEmpty()
}
