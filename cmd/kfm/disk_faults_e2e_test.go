package main

// Disk and filesystem faults (issue 14, item 3), on the harness of
// e2e_test.go: real mounts the tests make and remove (a private bpffs
// unmounted under kfm, a tmpfs that fills up, read-only bind mounts), never
// a mock. Each case checks the error a user reads, that nothing is left
// half-written, and that the next run repairs what the fault broke.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
		{"kfm/tailcall/IFINDEX/xdp/head", "xdp"},        // the root's own array
		{"kfm/tailcall/IFINDEX/xdp/root", "xdp"},        // orphans the root
		{"kfm/tcx/IFINDEX/tc-ingress/link-*", "tc-ingress"},
		{"kfm/tcx/IFINDEX/tc-ingress/gate", "tc-ingress"},
		{"kfm/tc/IFINDEX/tc-egress/meta", "tc-egress"},
		{"kfm/maps/IFINDEX/xdp/count/counters", "xdp"}, // state kept: pinned again
		{"kfm/maps/IFINDEX/tc-egress/count/kfm-counters", "tc-egress"},
	} {
		matches, _ := filepath.Glob(filepath.Join(h.bpffs, strings.ReplaceAll(tc.pin, "IFINDEX", strconv.Itoa(h.pair.BIfindex))))
		if len(matches) != 1 {
			t.Fatalf("%s: found %v", tc.pin, matches)
		}
		idsBefore, xdpBefore := programIDs(h.status()), h.mapPackets("xdp", "count", "counters", udp)
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
		if strings.Contains(tc.pin, "/maps/") {
			// The map is pinned again, the programs stay as they are.
			if !strings.Contains(stderr, "pinned "+filepath.Base(tc.pin)+" again") {
				t.Errorf("rm %s: apply --locked did not say it pinned the map again:\n%s", tc.pin, stderr)
			}
			if after := programIDs(h.status()); !maps.Equal(after, idsBefore) {
				t.Errorf("rm %s: apply --locked reloaded programs: %v, before %v", tc.pin, after, idsBefore)
			}
			if tc.hook == "xdp" {
				if n := h.mapPackets("xdp", "count", "counters", udp); n < xdpBefore {
					t.Errorf("rm %s: the counter map holds %d packets after the repair, %d before: state lost", tc.pin, n, xdpBefore)
				}
			}
		} else if !strings.Contains(out, tc.hook+" ("+map[string]string{"xdp": "tailcall", "tc-ingress": "tcx", "tc-egress": "tc"}[tc.hook]+"): applied") {
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

// ---- mounts the fault tests make ----

// mountTmpfs mounts a tmpfs of size bytes and returns its directory; it is
// unmounted when the test ends.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// bindReadOnly bind-mounts dir read-only onto itself and returns the
// function that undoes it (also run when the test ends).
func bindReadOnly(t *testing.T, dir string) (undo func()) {
	t.Helper()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s: %v", dir, err)
	}
	done := false
	undo = func() {
		if !done {
			done = true
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		}
	}
	t.Cleanup(undo)
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
	return undo
}

// fillUp leaves about free bytes free on the file system of dir and
// returns the filler file (remove it to free the space).
func fillUp(t *testing.T, dir string, free int64) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, int64(st.Bavail)*st.Bsize-free), 0o600); err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	return filler
}

// snapshot is what a failed command must leave as it was: the chains
// (with program IDs), kfm.yaml, kfm.lock and the pins.
type snapshot struct {
	status           []string
	manifest, locked string
	pins             []string
}

func (h *host) snapshot() snapshot {
	h.t.Helper()
	var st []string
	for _, hs := range h.status() {
		for _, p := range hs.Programs {
			st = append(st, fmt.Sprintf("%s %s %d %s", hs.Hook, p.Name, p.ProgramID, p.Digest))
		}
	}
	return snapshot{status: st, manifest: h.readConfig("kfm.yaml"), locked: h.readConfig("kfm.lock"), pins: h.pinTree()}
}

func (h *host) checkSnapshot(before snapshot, what string) {
	h.t.Helper()
	after := h.snapshot()
	if !slices.Equal(before.status, after.status) {
		h.t.Errorf("%s changed the running chains:\n  before %v\n  after  %v", what, before.status, after.status)
	}
	if before.manifest != after.manifest || before.locked != after.locked {
		h.t.Errorf("%s changed kfm.yaml or kfm.lock", what)
	}
	if !slices.Equal(before.pins, after.pins) {
		h.t.Errorf("%s changed the pins:\n  before %v\n  after  %v", what, before.pins, after.pins)
	}
	h.checkKernel(h.status())
}

// checkCacheWhole asserts that the cache holds no half-written file: no
// temporary file in ingest/, and every blob matches its digest.
func checkCacheWhole(t *testing.T, cacheDir string) {
	t.Helper()
	dir := filepath.Join(cacheDir, "oci")
	if left, _ := os.ReadDir(filepath.Join(dir, "ingest")); len(left) != 0 {
		t.Errorf("temporary files left in %s/ingest: %v", dir, left)
	}
	blobs, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", b.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != b.Name() {
			t.Errorf("blob %s holds %d bytes that do not match its digest", b.Name(), len(data))
		}
	}
	var index struct{ Manifests []any }
	if b, err := os.ReadFile(filepath.Join(dir, "index.json")); err != nil || json.Unmarshal(b, &index) != nil {
		t.Errorf("%s/index.json is not whole: %v", dir, err)
	}
}

// TestFaultCacheFull: the cache directory's file system fills up while kfm
// install pulls a bundle. The install fails naming the cache directory and
// what to do; the running chain, kfm.yaml, kfm.lock and the pins are as
// before; the cache holds nothing half-written; and once space is freed the
// same install succeeds.
func TestFaultCacheFull(t *testing.T) {
	h := newHost(t)
	h.cacheDir = filepath.Join(mountTmpfs(t, 4<<20), "cache")
	t.Setenv("KFM_CACHE_DIR", h.cacheDir)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	h.mustKFM("install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--priority", "20")
	before := h.snapshot()

	filler := fillUp(t, filepath.Dir(h.cacheDir), 8<<10)
	args := []string{"install", h.reg.Ref("net/portfilter", "1.0.0"), "--iface", h.iface, "--name", "portfilter", "--priority", "10", "--param", "port=7777"}
	out, stderr, code := h.kfm(args...)
	if code != exitFailure {
		t.Fatalf("install with a full cache: exit %d, want %d\n%s%s", code, exitFailure, out, stderr)
	}
	t.Logf("install with a full cache: %s", stderr)
	for _, want := range []string{filepath.Join(h.cacheDir, "oci"), "file system is full", "free space", "KFM_CACHE_DIR"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("install with a full cache: message does not say %q:\n%s", want, stderr)
		}
	}
	h.checkSnapshot(before, "the failed install")
	checkCacheWhole(t, h.cacheDir)

	os.Remove(filler)
	h.mustKFM(args...)
	if got := chainView(hookOf(h.status(), h.iface, "xdp")); len(got) != 2 || !strings.Contains(got[0], "portfilter") {
		t.Errorf("chain after the repaired install: %v", got)
	}
	checkCacheWhole(t, h.cacheDir)
	if got := h.traffic(10, 7777, 8888); got[7777] != 0 || got[8888] != 10 {
		t.Errorf("after the repaired install: %v datagrams arrived, want none to 7777 and 10 to 8888", got)
	}
}

// TestFaultCacheReadOnly: with the cache directory read-only, a bundle that
// is not cached cannot be installed (a clear error, nothing changed), and
// the chains kfm.lock pins, already cached, are applied from the read-only
// cache with the registry gone: what a host whose cache sits on a
// read-only image needs at boot.
func TestFaultCacheReadOnly(t *testing.T) {
	h := newHost(t)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	h.mustKFM("install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface)
	before := h.snapshot()
	bindReadOnly(t, h.cacheDir)

	out, stderr, code := h.kfm("install", h.reg.Ref("net/portfilter", "1.0.0"), "--iface", h.iface, "--priority", "10")
	if code != exitFailure {
		t.Fatalf("install into a read-only cache: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("install into a read-only cache: %s", stderr)
	for _, want := range []string{filepath.Join(h.cacheDir, "oci"), "read-only", "KFM_CACHE_DIR"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("install into a read-only cache: message does not say %q:\n%s", want, stderr)
		}
	}
	h.checkSnapshot(before, "the failed install")

	// Take the chain down (kfm.yaml empty), then bring it back from
	// kfm.lock and the read-only cache alone.
	h.writeConfig("kfm.yaml", "version: 1\nchains: []\n")
	h.mustKFM("apply")
	h.writeConfig("kfm.yaml", before.manifest)
	h.writeConfig("kfm.lock", before.locked)
	h.reg.Stop()
	h.mustKFM("apply", "--locked")
	if got := chainView(hookOf(h.status(), h.iface, "xdp")); len(got) != 1 || !strings.Contains(got[0], "count") {
		t.Errorf("chain applied from the read-only cache: %v", got)
	}
	h.checkKernel(h.status())
}

// TestFaultStateDirReadOnly: the state directory is read-only. A change
// fails before anything is loaded or attached, with an error that names
// the directory and what to do; the running chain, kfm.yaml, kfm.lock and
// the pins stay as they were; kfm status still reports; and once the
// directory is writable again the same change succeeds.
func TestFaultStateDirReadOnly(t *testing.T) {
	h := newHost(t)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	h.mustKFM("install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--priority", "20")
	before := h.snapshot()
	undo := bindReadOnly(t, h.stateDir)

	args := []string{"install", h.reg.Ref("net/portfilter", "1.0.0"), "--iface", h.iface, "--priority", "10"}
	for _, cmd := range [][]string{args, {"remove", "count", "--iface", h.iface}, {"apply"}} {
		out, stderr, code := h.kfm(cmd...)
		if code != exitFailure {
			t.Fatalf("kfm %s with a read-only state directory: exit %d\n%s%s", cmd[0], code, out, stderr)
		}
		t.Logf("kfm %s with a read-only state directory: %s", cmd[0], stderr)
		for _, want := range []string{"state directory not writable", h.stateDir, "read-only", "KFM_STATE_DIR"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("kfm %s: message does not say %q:\n%s", cmd[0], want, stderr)
			}
		}
		h.checkSnapshot(before, "kfm "+cmd[0])
	}

	undo()
	h.mustKFM(args...)
	if got := chainView(hookOf(h.status(), h.iface, "xdp")); len(got) != 2 {
		t.Errorf("chain after the state directory is writable again: %v", got)
	}
	h.checkKernel(h.status())
}

// TestFaultStateDirFull: the state directory's file system is full. The
// change fails before anything is attached (the host state is written
// before the first program is loaded), names the directory, and leaves the
// running chain and the host state as they were; with space freed the same
// change succeeds.
func TestFaultStateDirFull(t *testing.T) {
	h := newHost(t)
	h.stateDir = filepath.Join(mountTmpfs(t, 1<<20), "kfm")
	t.Setenv("KFM_STATE_DIR", h.stateDir)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	h.mustKFM("install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--priority", "20")
	before := h.snapshot()
	state, err := os.ReadFile(filepath.Join(h.stateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}

	filler := fillUp(t, filepath.Dir(h.stateDir), 0)
	args := []string{"install", h.reg.Ref("net/portfilter", "1.0.0"), "--iface", h.iface, "--priority", "10"}
	out, stderr, code := h.kfm(args...)
	if code != exitFailure {
		t.Fatalf("install with a full state directory: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("install with a full state directory: %s", stderr)
	for _, want := range []string{"state directory not writable", h.stateDir, "is full", "nothing was changed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("message does not say %q:\n%s", want, stderr)
		}
	}
	h.checkSnapshot(before, "the failed install")
	if got, _ := os.ReadFile(filepath.Join(h.stateDir, "state.json")); string(got) != string(state) {
		t.Error("state.json changed although the install failed")
	}
	if left, _ := filepath.Glob(filepath.Join(h.stateDir, ".state.json.tmp-*")); len(left) != 0 {
		t.Errorf("temporary state files left: %v", left)
	}

	os.Remove(filler)
	h.mustKFM(args...)
	if got := chainView(hookOf(h.status(), h.iface, "xdp")); len(got) != 2 {
		t.Errorf("chain once space is freed: %v", got)
	}
	h.checkKernel(h.status())
}
