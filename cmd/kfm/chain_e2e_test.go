package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/verify"
)

// The end-to-end tests of kfm.yaml, kfm.lock and apply (issue 7), on the
// host's kernel with the harness of e2e_test.go. XDP chains run on the
// backend auto picks here (tailcall: the sandbox refuses freplace), TC
// chains on tcx.

const udp = 17

// objectDigest is the "sha256:<hex>" of a file, as kfm.lock records
// objects.
func objectDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// keyFingerprint is the fingerprint kfm.lock records for a public key.
func keyFingerprint(t *testing.T, pub string) string {
	t.Helper()
	pk, err := verify.LoadPublicKey(context.Background(), pub)
	if err != nil {
		t.Fatal(err)
	}
	return pk.Fingerprint
}

// TestChainRoundTrip: three signed programs installed from the registry are
// pinned in kfm.lock (digest, object, signer, params); after removing them
// all (nothing of kfm left in the kernel or bpffs), the saved kfm.yaml and
// kfm.lock give back the identical chain with apply --locked, from the
// cache with the registry gone (as at boot), and packets show it works.
func TestChainRoundTrip(t *testing.T) {
	h := newHost(t)
	type prog struct {
		name, obj, repo, prio string
		params                map[string]string
	}
	progs := []prog{ // installed in this order; they run by priority
		{"count", "xdp_count.o", "net/count", "30", nil},
		{"ratelimit", "xdp_ratelimit.o", "net/ratelimit", "10", map[string]string{"rate": "1000", "burst": "500"}},
		{"portfilter", "xdp_portfilter.o", "net/portfilter", "20", map[string]string{"port": "7777"}},
	}
	digests := map[string]string{}
	for _, p := range progs {
		digests[p.name] = h.publish(samplesDir+p.obj, p.repo, "1.0.0", "")
	}
	for _, p := range progs {
		args := []string{"install", h.reg.Ref(p.repo, "1.0.0"), "--iface", h.iface, "--name", p.name, "--priority", p.prio}
		for _, k := range slices.Sorted(maps.Keys(p.params)) {
			args = append(args, "--param", k+"="+p.params[k])
		}
		h.mustKFM(args...)
	}

	// kfm.lock pins each program: digest, object, signer, params, in run
	// order.
	lk := h.lock()
	if len(lk.Chains) != 1 || lk.Chains[0].Interface != h.iface || lk.Chains[0].Hook != "xdp" {
		t.Fatalf("kfm.lock chains: %+v", lk.Chains)
	}
	fp := keyFingerprint(t, h.pub)
	var order []string
	for _, lp := range lk.Chains[0].Programs {
		order = append(order, lp.Name)
		i := slices.IndexFunc(progs, func(p prog) bool { return p.name == lp.Name })
		if i < 0 {
			t.Errorf("kfm.lock has %q", lp.Name)
			continue
		}
		p := progs[i]
		switch {
		case lp.Ref != h.reg.Ref(p.repo, "1.0.0"), lp.Resolved != h.reg.Ref(p.repo, "1.0.0"):
			t.Errorf("%s: ref %q resolved %q", lp.Name, lp.Ref, lp.Resolved)
		case lp.Digest != digests[p.name]:
			t.Errorf("%s: digest %s, published %s", lp.Name, lp.Digest, digests[p.name])
		case lp.Object != objectDigest(t, samplesDir+p.obj):
			t.Errorf("%s: object %s, want the sha256 of %s", lp.Name, lp.Object, p.obj)
		case lp.Signer == nil || lp.Signer.Key != fp || lp.Signer.Unsigned:
			t.Errorf("%s: signer %v, want key %s", lp.Name, lp.Signer, fp)
		case !maps.Equal(lp.Params, p.params):
			t.Errorf("%s: params %v, want %v", lp.Name, lp.Params, p.params)
		case lp.Function != strings.TrimSuffix(p.obj, ".o"), lp.Priority != atoi(t, p.prio), !slices.Equal(lp.ProceedOn, []string{"pass"}):
			t.Errorf("%s: function %s, priority %d, proceed-on %v", lp.Name, lp.Function, lp.Priority, lp.ProceedOn)
		}
	}
	if want := []string{"ratelimit", "portfilter", "count"}; !slices.Equal(order, want) {
		t.Errorf("kfm.lock order %v, want %v", order, want)
	}

	hs := h.status()
	xdp := hookOf(hs, h.iface, "xdp")
	if xdp == nil || len(hs) != 1 || len(xdp.Drift) != 0 {
		t.Fatalf("status after install: %+v", hs)
	}
	before := chainView(xdp)
	for i, lp := range lk.Chains[0].Programs {
		if p := xdp.Programs[i]; p.Name != lp.Name || p.Digest != lp.Digest || p.Origin != chain.OriginKFM {
			t.Errorf("status position %d: %+v, kfm.lock: %+v", i, p, lp)
		}
	}
	h.checkKernel(hs)
	checkChainWorks := func() {
		t.Helper()
		got := h.traffic(40, 7777, 8888)
		if got[7777] != 0 || got[8888] != 40 {
			t.Errorf("received %d datagrams to the filtered port 7777 (want 0) and %d to 8888 (want 40)", got[7777], got[8888])
		}
		// ratelimit runs first and sees everything, portfilter drops
		// 7777, count runs last and sees only what passed.
		if n := h.mapPackets("xdp", "ratelimit", "stats", 0); n != 80 {
			t.Errorf("ratelimit passed %d IPv4 packets, want 80", n)
		}
		if n := h.mapPackets("xdp", "portfilter", "drops", 0); n != 40 {
			t.Errorf("portfilter dropped %d packets, want 40", n)
		}
		if n := h.mapPackets("xdp", "count", "counters", udp); n != 40 {
			t.Errorf("count counted %d UDP packets, want 40 (only those portfilter passed)", n)
		}
	}
	checkChainWorks()

	manifest, lock := h.readConfig("kfm.yaml"), h.readConfig("kfm.lock")
	for _, p := range progs {
		h.mustKFM("remove", p.name, "--iface", h.iface)
	}
	h.checkEmpty()
	if lk := h.lock(); len(lk.Chains) != 0 {
		t.Errorf("kfm.lock after removing everything: %+v", lk.Chains)
	}

	// Back from the saved files, from the cache alone: the registry is
	// gone, and apply --locked (what kfm-apply.service runs at boot) needs
	// no flag for that.
	h.reg.Stop()
	h.writeConfig("kfm.yaml", manifest)
	h.writeConfig("kfm.lock", lock)
	out := h.mustKFM("apply", "--locked")
	if !strings.Contains(out, "add ratelimit, portfilter, count") || !strings.Contains(out, "chain: ratelimit -> portfilter -> count") {
		t.Errorf("apply --locked output:\n%s", out)
	}
	hs = h.status()
	if after := chainView(hookOf(hs, h.iface, "xdp")); !slices.Equal(after, before) {
		t.Errorf("chain after apply --locked:\n  %s\nbefore:\n  %s", strings.Join(after, "\n  "), strings.Join(before, "\n  "))
	}
	if got := h.readConfig("kfm.lock"); got != lock {
		t.Errorf("apply --locked rewrote kfm.lock:\n%s\nwas:\n%s", got, lock)
	}
	h.checkKernel(hs)
	checkChainWorks()

	// And out again with kfm.yaml emptied: apply removes what it no
	// longer names.
	h.writeConfig("kfm.yaml", "version: 1\nchains: []\n")
	h.mustKFM("apply")
	h.checkEmpty()
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// bundleFile writes a bundle.yaml giving function a default priority.
func bundleFile(t *testing.T, function string, priority int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bundle.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("programs:\n  - function: %s\n    priority: %d\n", function, priority)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// digestsOf lists the bundle digests of a hook's programs in run order, as
// kfm status reports them (name=digest).
func digestsOf(hs *chain.HookStatus) []string {
	if hs == nil {
		return nil
	}
	var out []string
	for _, p := range hs.Programs {
		out = append(out, p.Name+"="+p.Digest)
	}
	return out
}

// lockedDigests lists name=digest of a locked chain in run order.
func lockedDigests(lk *chain.Lock, iface, hook string) []string {
	var out []string
	if lc := lk.Chain(iface, bpf.Hook(hook)); lc != nil {
		for _, lp := range lc.Programs {
			out = append(out, lp.Name+"="+lp.Digest)
		}
	}
	return out
}

// TestChainReproducible: kfm.lock, not the tags, decides what runs. After
// every tag moved to new signed content (with other default priorities),
// apply --locked still installs the locked digests in the locked order;
// apply re-locks to the new ones; a tag moved to unsigned content is
// refused; a signer change under --locked is refused with exit status 3
// and nothing changes in the kernel, while apply without --locked accepts
// the signer the policy now trusts and records it.
func TestChainReproducible(t *testing.T) {
	h := newHost(t)
	type prog struct {
		name, obj, fn string
		prio1, prio2  int // bundle default priorities before and after the tags move
	}
	progs := []prog{
		{"ratelimit", "xdp_ratelimit.o", "xdp_ratelimit", 10, 10},
		{"portfilter", "xdp_portfilter.o", "xdp_portfilter", 20, 20},
		{"count", "xdp_count.o", "xdp_count", 30, 5}, // moves first
	}
	v1, v2 := map[string]string{}, map[string]string{}
	for _, p := range progs {
		v1[p.name] = h.publish(samplesDir+p.obj, "net/"+p.name, "stable", "", "--bundle", bundleFile(t, p.fn, p.prio1), "--description", "first release")
	}
	h.writeConfig("kfm.yaml", fmt.Sprintf(`version: 1
chains:
  - interface: %[1]s
    hook: xdp
    programs:
      - name: count
        ref: %[2]s/net/count:stable
      - name: ratelimit
        ref: %[2]s/net/ratelimit:stable
        params: {burst: "500"}
      - name: portfilter
        ref: %[2]s/net/portfilter:stable
        params: {port: "7777"}
`, h.iface, h.reg.Host()))
	out := h.mustKFM("lock")
	if !strings.Contains(out, "kfm.lock written") {
		t.Errorf("kfm lock: %s", out)
	}
	if hs := h.status(); len(hook(hs, h.iface, "xdp").Programs) != 0 {
		t.Fatalf("kfm lock touched the kernel: %+v", hs)
	}
	lock1 := h.readConfig("kfm.lock")
	want1 := []string{"ratelimit=" + v1["ratelimit"], "portfilter=" + v1["portfilter"], "count=" + v1["count"]}
	if got := lockedDigests(h.lock(), h.iface, "xdp"); !slices.Equal(got, want1) {
		t.Fatalf("kfm.lock: %v, want %v", got, want1)
	}

	// Every tag moves to new signed content.
	for _, p := range progs {
		v2[p.name] = h.publish(samplesDir+p.obj, "net/"+p.name, "stable", "", "--bundle", bundleFile(t, p.fn, p.prio2), "--description", "second release")
		if v2[p.name] == v1[p.name] {
			t.Fatalf("%s: the second release has the first one's digest", p.name)
		}
	}
	out = h.mustKFM("outdated", "-o", "json")
	var outs []chain.Outdated
	if err := json.Unmarshal([]byte(out), &outs); err != nil || len(outs) != 3 || !outs[0].Moved || !outs[1].Moved || !outs[2].Moved {
		t.Errorf("kfm outdated after the tags moved: %v %s", err, out)
	}

	out = h.mustKFM("apply", "--locked")
	if !strings.Contains(out, "chain: ratelimit -> portfilter -> count") {
		t.Errorf("apply --locked: %s", out)
	}
	hs := h.status()
	if got := digestsOf(hook(hs, h.iface, "xdp")); !slices.Equal(got, want1) {
		t.Errorf("apply --locked runs %v, kfm.lock pins %v", got, want1)
	}
	if h.readConfig("kfm.lock") != lock1 {
		t.Error("apply --locked changed kfm.lock")
	}
	h.checkKernel(hs)
	if got := h.traffic(20, 7777, 8888); got[7777] != 0 || got[8888] != 20 {
		t.Errorf("traffic: %v", got)
	}
	if n := h.mapPackets("xdp", "count", "counters", udp); n != 20 {
		t.Errorf("count (last in the locked chain) saw %d UDP packets, want 20", n)
	}

	// kfm lock follows the tags without touching the kernel; kfm status
	// shows the drift.
	h.mustKFM("lock")
	hs = h.status()
	drift := hook(hs, h.iface, "xdp").Drift
	if len(drift) != 3 || !strings.Contains(strings.Join(drift, "\n"), "count runs "+v1["count"]+", kfm.lock pins "+v2["count"]) {
		t.Errorf("drift after kfm lock: %q", drift)
	}
	out = h.mustKFM("status")
	if !strings.Contains(out, "drift: ratelimit runs "+v1["ratelimit"]+", kfm.lock pins "+v2["ratelimit"]) {
		t.Errorf("kfm status does not show the drift:\n%s", out)
	}
	h.writeConfig("kfm.lock", lock1)

	// Without --locked: re-locked to what the tags name now.
	out = h.mustKFM("apply")
	t.Logf("apply after the tags moved:\n%s", out)
	if !strings.Contains(out, "kfm.lock updated") || !strings.Contains(out, "chain: count -> ratelimit -> portfilter") {
		t.Errorf("apply after the tags moved: %s", out)
	}
	want2 := []string{"count=" + v2["count"], "ratelimit=" + v2["ratelimit"], "portfilter=" + v2["portfilter"]}
	if got := lockedDigests(h.lock(), h.iface, "xdp"); !slices.Equal(got, want2) {
		t.Errorf("kfm.lock after apply: %v, want %v", got, want2)
	}
	hs = h.status()
	if got := digestsOf(hook(hs, h.iface, "xdp")); !slices.Equal(got, want2) {
		t.Errorf("apply runs %v, want %v", got, want2)
	}
	h.checkKernel(hs)
	if got := h.traffic(20, 7777, 8888); got[7777] != 0 || got[8888] != 20 {
		t.Errorf("traffic: %v", got)
	}
	if n := h.mapPackets("xdp", "count", "counters", udp); n != 20+40 {
		t.Errorf("count (now first) counted %d UDP packets in all, want 60", n)
	}
	lock2 := h.readConfig("kfm.lock")
	ids := programIDs(hs)

	// A tag moved to unsigned content does not get in.
	unchanged := func(what string) {
		t.Helper()
		hs := h.status()
		if got := programIDs(hs); !maps.Equal(got, ids) {
			t.Errorf("%s: the kernel changed: programs %v, before %v", what, got, ids)
		}
		if got := h.readConfig("kfm.lock"); got != lock2 {
			t.Errorf("%s: kfm.lock changed:\n%s", what, got)
		}
	}
	if _, stderr, code := kfm(t, "", "publish", samplesDir+"xdp_ratelimit.o", h.reg.Ref("net/ratelimit", "stable"), "--description", "unsigned"); code != exitOK {
		t.Fatalf("publish unsigned: %s", stderr)
	}
	_, stderr, code := h.kfm("apply")
	if code != exitTrust || !strings.Contains(stderr, "ratelimit") || !strings.Contains(stderr, "no signature") {
		t.Errorf("apply with a tag moved to unsigned content: exit %d (want %d): %s", code, exitTrust, stderr)
	}
	t.Logf("apply with a tag moved to unsigned content: exit %d: %s", code, stderr)
	unchanged("apply of an unsigned tag")
	if out := h.mustKFM("apply", "--locked"); strings.Count(out, "unchanged") != 1 {
		t.Errorf("apply --locked after the refusal: %s", out)
	}
	unchanged("apply --locked")

	// The signer changes: the locked digests are signed by a second key,
	// which the policy now trusts instead of the first.
	_, pub2 := keyPair(t, "e2e-password")
	key2 := strings.TrimSuffix(pub2, ".pub") + ".key"
	for _, p := range progs {
		if _, stderr, code := kfm(t, "", "sign", h.reg.Host()+"/net/"+p.name+"@"+v2[p.name], "--key", key2); code != exitOK {
			t.Fatalf("sign with the second key: %s", stderr)
		}
	}
	h.trust(pub2)
	_, stderr, code = h.kfm("apply", "--locked")
	if code != exitTrust || !strings.Contains(stderr, "signer changed") || !strings.Contains(stderr, keyFingerprint(t, h.pub)) {
		t.Errorf("apply --locked after the signer changed: exit %d (want %d): %s", code, exitTrust, stderr)
	}
	t.Logf("apply --locked after the signer changed: exit %d: %s", code, stderr)
	unchanged("apply --locked with another signer")

	// apply re-locks with the signer the policy accepts now (the tag of
	// ratelimit names unsigned content: pin it by digest).
	man := strings.Replace(h.readConfig("kfm.yaml"), "/net/ratelimit:stable", "/net/ratelimit@"+v2["ratelimit"], 1)
	h.writeConfig("kfm.yaml", man)
	out = h.mustKFM("apply")
	if !strings.Contains(out, "kfm.lock updated") || strings.Count(out, "unchanged") != 1 {
		t.Errorf("apply with the new signer: %s", out)
	}
	fp2 := keyFingerprint(t, pub2)
	for _, lp := range h.lock().Chains[0].Programs {
		if lp.Signer == nil || lp.Signer.Key != fp2 {
			t.Errorf("%s: locked signer %v, want key %s", lp.Name, lp.Signer, fp2)
		}
	}
	if got := lockedDigests(h.lock(), h.iface, "xdp"); !slices.Equal(got, want2) {
		t.Errorf("kfm.lock: %v, want %v", got, want2)
	}
	if got := programIDs(h.status()); !maps.Equal(got, ids) {
		t.Errorf("a new signer for the same code reloaded programs: %v, before %v", got, ids)
	}
	if out := h.mustKFM("apply", "--locked"); strings.Count(out, "unchanged") != 1 {
		t.Errorf("apply --locked with the new lock: %s", out)
	}

	// kfm.yaml asks for something the lock does not pin: apply --locked
	// refuses (exit status 4) and changes nothing.
	lock2 = h.readConfig("kfm.lock")
	ids = programIDs(h.status())
	h.writeConfig("kfm.yaml", strings.Replace(man, `port: "7777"`, `port: "7778"`, 1))
	_, stderr, code = h.kfm("apply", "--locked")
	if code != exitLockMismatch || !strings.Contains(stderr, "portfilter: params changed") || !strings.Contains(stderr, "run kfm lock") {
		t.Errorf("apply --locked of a lock that does not match kfm.yaml: exit %d (want %d): %s", code, exitLockMismatch, stderr)
	}
	unchanged("apply --locked of a stale lock")
}

// TestChainUpdateRange: a semver range stays on its locked version until
// kfm update, which moves it to the newest version the range allows (1.1.0,
// not 2.0.0); kfm outdated says so before and after.
func TestChainUpdateRange(t *testing.T) {
	h := newHost(t)
	d := map[string]string{"1.0.0": h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")}
	h.mustKFM("install", h.reg.Host()+"/net/count:^1.0", "--iface", h.iface, "--name", "count")
	lp := h.lock().Chains[0].Programs[0]
	if lp.Ref != h.reg.Host()+"/net/count:^1.0" || lp.Resolved != h.reg.Ref("net/count", "1.0.0") || lp.Digest != d["1.0.0"] {
		t.Fatalf("locked: %+v", lp)
	}
	for _, v := range []string{"1.1.0", "2.0.0"} {
		d[v] = h.publish(samplesDir+"xdp_count.o", "net/count", v, "")
	}
	outdated := func() []chain.Outdated {
		t.Helper()
		var outs []chain.Outdated
		if err := json.Unmarshal([]byte(h.mustKFM("outdated", "-o", "json")), &outs); err != nil {
			t.Fatal(err)
		}
		return outs
	}
	if o := outdated(); len(o) != 1 || o[0].Name != "count" || o[0].Current != "1.0.0" || o[0].Wanted != "1.1.0" || o[0].Latest != "2.0.0" || o[0].Moved {
		t.Errorf("outdated before the update: %+v", o)
	}
	out := h.mustKFM("outdated")
	if !strings.Contains(strings.Join(strings.Fields(out), " "), "count "+h.iface+" xdp 1.0.0 1.1.0 2.0.0") {
		t.Errorf("kfm outdated:\n%s", out)
	}

	// apply keeps the locked version.
	h.mustKFM("apply")
	if got := h.lock().Chains[0].Programs[0]; got.Digest != d["1.0.0"] {
		t.Errorf("apply moved the range to %s", got.Resolved)
	}

	out = h.mustKFM("update", "count")
	if !strings.Contains(out, "kfm.lock updated") {
		t.Errorf("kfm update: %s", out)
	}
	lp = h.lock().Chains[0].Programs[0]
	if lp.Ref != h.reg.Host()+"/net/count:^1.0" || lp.Resolved != h.reg.Ref("net/count", "1.1.0") || lp.Digest != d["1.1.0"] {
		t.Errorf("locked after kfm update: %+v", lp)
	}
	if got := digestsOf(hook(h.status(), h.iface, "xdp")); !slices.Equal(got, []string{"count=" + d["1.1.0"]}) {
		t.Errorf("running after kfm update: %v", got)
	}
	if o := outdated(); len(o) != 1 || o[0].Current != "1.1.0" || o[0].Wanted != "1.1.0" || o[0].Latest != "2.0.0" {
		t.Errorf("outdated after the update: %+v", o)
	}
	if _, stderr, code := h.kfm("update", "nosuch"); code != exitFailure || !strings.Contains(stderr, `no program named "nosuch"`) {
		t.Errorf("kfm update of an unknown name: exit %d %s", code, stderr)
	}
}

// TestChainTransaction: a change whose third program fails the verifier
// changes nothing on any hook, even where the rest of the change loaded
// fine: the same program IDs run, the pins are the same, kfm.yaml and
// kfm.lock are as they were, the exit status is 1 and the message names the
// program with an excerpt of the verifier's log.
func TestChainTransaction(t *testing.T) {
	h := newHost(t)
	for _, p := range []struct{ obj, repo string }{
		{samplesDir + "xdp_ratelimit.o", "net/ratelimit"},
		{samplesDir + "xdp_count.o", "net/count"},
		{samplesDir + "xdp_portfilter.o", "net/portfilter"},
		{samplesDir + "tc_count.o", "net/tc-count"},
		{samplesDir + "tc_mark.o", "net/tc-mark"},
		{testprogDir + "tc_verifier_fail.o", "net/tc-bad"},
		{testprogDir + "xdp_verifier_fail.o", "net/xdp-bad"},
	} {
		h.publish(p.obj, p.repo, "1.0.0", "")
	}
	ref := func(repo string) string { return h.reg.Ref("net/"+repo, "1.0.0") }
	h.mustKFM("install", ref("ratelimit"), "--iface", h.iface, "--name", "ratelimit", "--priority", "10")
	h.mustKFM("install", ref("count"), "--iface", h.iface, "--name", "count", "--priority", "30")
	h.mustKFM("install", ref("tc-count"), "--iface", h.iface, "--name", "tc-count", "--priority", "20")
	manifest, lock := h.readConfig("kfm.yaml"), h.readConfig("kfm.lock")
	before := h.status()
	ids, pins := programIDs(before), h.pinTree()
	if len(ids) != 5 { // xdp: the tail-call root and 2 programs; tc-ingress: the gate and 1 program (tcx)
		t.Fatalf("programs before: %v", ids)
	}

	chainsText := func(xdp, tc string) string {
		x := fmt.Sprintf(`  - interface: %s
    hook: xdp
    programs:
      - {name: ratelimit, ref: %q, priority: 10}
      - {name: count, ref: %q, priority: 30}
%s`, h.iface, ref("ratelimit"), ref("count"), xdp)
		c := fmt.Sprintf(`  - interface: %s
    hook: tc-ingress
    programs:
      - {name: tc-count, ref: %q, priority: 20}
%s`, h.iface, ref("tc-count"), tc)
		return x + c
	}
	tcBad := fmt.Sprintf("      - {name: tc-mark, ref: %q, priority: 10}\n      - {name: tc-bad, ref: %q, priority: 30}\n", ref("tc-mark"), ref("tc-bad"))
	xdpBad := fmt.Sprintf("      - {name: xdp-bad, ref: %q, priority: 40}\n", ref("xdp-bad"))
	xdpGood := fmt.Sprintf("      - {name: portfilter, ref: %q, priority: 20}\n", ref("portfilter"))
	tcGood := fmt.Sprintf("      - {name: tc-mark, ref: %q, priority: 10}\n", ref("tc-mark"))

	for _, tc := range []struct {
		name string
		// args runs kfm; manifest, when set, replaces kfm.yaml first.
		args     []string
		manifest string
		// prog is the program the message must name.
		prog string
	}{
		{
			name: "install of a local object",
			args: []string{"install", testprogDir + "xdp_verifier_fail.o", "--iface", h.iface, "--priority", "20"},
			prog: "xdp_verifier_fail",
		},
		{
			name:     "apply: xdp loads, tc-ingress fails",
			args:     []string{"apply"},
			manifest: "version: 1\nchains:\n" + chainsText(xdpGood, tcBad),
			prog:     "tc-bad",
		},
		{
			// tc-ingress first in kfm.yaml: it is loaded first.
			name:     "apply: tc-ingress loads, xdp fails",
			args:     []string{"apply"},
			manifest: "version: 1\nchains:\n" + strings.Join(reverseChains(chainsText(xdpBad, tcGood)), ""),
			prog:     "xdp-bad",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			if tc.manifest != "" {
				h.writeConfig("kfm.yaml", tc.manifest)
			}
			_, stderr, code := h.kfm(tc.args...)
			t.Logf("exit %d: %s", code, stderr)
			if code != exitFailure {
				t.Errorf("exit %d, want %d", code, exitFailure)
			}
			if !strings.Contains(stderr, tc.prog+": program failed to load") || !strings.Contains(stderr, "verifier log") || !strings.Contains(stderr, "invalid access to packet") {
				t.Errorf("the message does not name %s with the verifier's complaint (invalid access to packet): %s", tc.prog, stderr)
			}
			after := h.status()
			if got := programIDs(after); !maps.Equal(got, ids) {
				t.Errorf("programs after the failure: %v, before: %v", got, ids)
			}
			for _, hk := range []string{"xdp", "tc-ingress"} {
				if a, b := chainView(hookOf(after, h.iface, hk)), chainView(hookOf(before, h.iface, hk)); !slices.Equal(a, b) {
					t.Errorf("%s after the failure: %v, before: %v", hk, a, b)
				}
			}
			if got := h.pinTree(); !slices.Equal(got, pins) {
				t.Errorf("pins after the failure:\n  %s\nbefore:\n  %s", strings.Join(got, "\n  "), strings.Join(pins, "\n  "))
			}
			h.checkKernel(after)
			if tc.manifest == "" && h.readConfig("kfm.yaml") != manifest {
				t.Errorf("kfm.yaml changed:\n%s", h.readConfig("kfm.yaml"))
			}
			if h.readConfig("kfm.lock") != lock {
				t.Errorf("kfm.lock changed:\n%s", h.readConfig("kfm.lock"))
			}
			h.writeConfig("kfm.yaml", manifest)
		})
	}
	h.t = t
	// The previous chains still work, and still apply as they are, with
	// the same programs.
	if out := h.mustKFM("apply"); strings.Count(out, "unchanged") != 2 {
		t.Errorf("apply of the original kfm.yaml: %s", out)
	}
	if got := programIDs(h.status()); !maps.Equal(got, ids) {
		t.Errorf("programs after applying the original kfm.yaml: %v, before: %v", got, ids)
	}
	if got := h.traffic(10, 8888); got[8888] != 10 {
		t.Errorf("traffic through the untouched chains: %v", got)
	}
	if n := h.mapPackets("tc-ingress", "tc-count", "totals", 0); n < 10 {
		t.Errorf("tc-count counted %d packets, want >= 10", n)
	}
}

// reverseChains splits the chains of a kfm.yaml fragment (items starting
// with "  - interface:") and returns them in reverse order.
func reverseChains(s string) []string {
	var items []string
	for _, part := range strings.SplitAfter(s, "\n") {
		if strings.HasPrefix(part, "  - interface:") || len(items) == 0 {
			items = append(items, "")
		}
		items[len(items)-1] += part
	}
	slices.Reverse(items)
	return items
}

// crashSteps are the checkpoints of an apply that changes two hooks, in
// order (see chain.Options.Checkpoint).
var crashSteps = []string{"prepared", "written-ahead", "committed-1", "committed-2", "cleaned-up", "state-saved", "files-saved"}

// hostState reads kfm's host state file.
func (h *host) hostState() *chain.State {
	h.t.Helper()
	var st chain.State
	b, err := os.ReadFile(filepath.Join(h.stateDir, "state.json"))
	if err != nil {
		h.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		h.t.Fatalf("state.json: %v", err)
	}
	return &st
}

// TestChainCrashSafety kills kfm (SIGKILL, a real process) at every
// checkpoint of an apply that changes two hooks, and checks that the next
// kfm apply converges exactly as a clean run does: the same kfm.lock, the
// same chains (names, order, digests, params), the same pin tree, no
// program in the kernel that the chains do not use (nothing reachable from
// the pins or hooks beyond the running chains, and no program anywhere in
// the kernel using this test's maps beyond them), none of the programs the
// killed process left behind, nothing pending in the host state, and a
// second apply changes nothing. The next apply is apply --locked of the
// same lock (the boot service), apply of an edited kfm.yaml whose lock the
// apply itself rewrites, or apply --locked of the previous files put back;
// then two crashes in a row (the second at each checkpoint), and a dozen
// kills at random moments (inside the backends' commits, registry reads and
// state writes too).
func TestChainCrashSafety(t *testing.T) {
	h := newHost(t)
	for _, p := range []struct{ obj, repo string }{
		{samplesDir + "xdp_ratelimit.o", "net/ratelimit"},
		{samplesDir + "xdp_count.o", "net/count"},
		{samplesDir + "xdp_portfilter.o", "net/portfilter"},
		{samplesDir + "tc_count.o", "net/tc-count"},
		{samplesDir + "tc_mark.o", "net/tc-mark"},
	} {
		h.publish(p.obj, p.repo, "1.0.0", "")
	}
	ref := func(repo string) string { return h.reg.Ref("net/"+repo, "1.0.0") }
	// A: xdp ratelimit -> count, tc-ingress tc-count. B changes both
	// hooks: portfilter joins the xdp chain, tc-mark goes before tc-count.
	manifestA := fmt.Sprintf(`version: 1
chains:
  - interface: %[1]s
    hook: xdp
    programs:
      - {name: ratelimit, ref: %[2]q, priority: 10, params: {burst: "500"}}
      - {name: count, ref: %[3]q, priority: 30}
  - interface: %[1]s
    hook: tc-ingress
    programs:
      - {name: tc-count, ref: %[4]q, priority: 20}
`, h.iface, ref("ratelimit"), ref("count"), ref("tc-count"))
	manifestB := fmt.Sprintf(`version: 1
chains:
  - interface: %[1]s
    hook: xdp
    programs:
      - {name: ratelimit, ref: %[2]q, priority: 10, params: {burst: "500"}}
      - {name: portfilter, ref: %[5]q, priority: 20, params: {port: "7777"}}
      - {name: count, ref: %[3]q, priority: 30}
  - interface: %[1]s
    hook: tc-ingress
    programs:
      - {name: tc-mark, ref: %[6]q, priority: 10, params: {mark: "7"}}
      - {name: tc-count, ref: %[4]q, priority: 20}
`, h.iface, ref("ratelimit"), ref("count"), ref("tc-count"), ref("portfilter"), ref("tc-mark"))

	type snapshot struct {
		lock  string
		views map[string][]string
		pins  []string
	}
	take := func() snapshot {
		t.Helper()
		hs := h.status()
		s := snapshot{lock: h.readConfig("kfm.lock"), views: map[string][]string{}, pins: h.pinTree()}
		for _, hk := range []string{"xdp", "tc-ingress"} {
			s.views[hk] = chainView(hookOf(hs, h.iface, hk))
			if hs := hookOf(hs, h.iface, hk); hs == nil || len(hs.Drift) > 0 {
				t.Errorf("%s: no chain, or drift from kfm.lock: %+v", hk, hs)
			}
		}
		h.checkKernel(hs)
		return s
	}
	same := func(what string, got, want snapshot) {
		t.Helper()
		if got.lock != want.lock {
			t.Errorf("%s: kfm.lock:\n%s\nwant:\n%s", what, got.lock, want.lock)
		}
		for hk, v := range want.views {
			if !slices.Equal(got.views[hk], v) {
				t.Errorf("%s: %s chain:\n  %s\nwant:\n  %s", what, hk, strings.Join(got.views[hk], "\n  "), strings.Join(v, "\n  "))
			}
		}
		if !slices.Equal(got.pins, want.pins) {
			t.Errorf("%s: pins:\n  %s\nwant (clean run):\n  %s", what, strings.Join(got.pins, "\n  "), strings.Join(want.pins, "\n  "))
		}
	}

	// Clean runs: B, then A, each locked by the apply.
	h.writeConfig("kfm.yaml", manifestB)
	h.mustKFM("apply")
	cleanB := take()
	h.writeConfig("kfm.yaml", manifestA)
	os.Remove(filepath.Join(h.configDir, "kfm.lock"))
	h.mustKFM("apply")
	cleanA := take()
	if got := h.traffic(10, 7777); got[7777] != 10 {
		t.Errorf("chain A passes port 7777: %v", got)
	}

	// leftovers lists what a killed kfm left in the kernel: the programs
	// reachable from the pins and hooks, and those the host state names
	// as pending.
	leftovers := func(into map[ebpf.ProgramID]string) {
		for id, name := range h.reachable() {
			into[id] = name
		}
		for _, hs := range h.hostState().Hooks {
			for _, pe := range hs.Pending {
				if _, ok := into[pe.ProgramID]; !ok {
					into[pe.ProgramID] = "pending " + pe.Name
				}
			}
		}
	}
	// recover runs the next apply (a process, as at boot) and checks that
	// it converged to want, with none of left in the kernel but what the
	// chains run, nothing pending or marked in the host state, and that
	// one more apply changes nothing.
	recover := func(t *testing.T, what string, args []string, want snapshot, left map[ebpf.ProgramID]string) {
		t.Helper()
		p := h.start(nil, args...)
		if code, _ := p.wait(t, time.Minute); code != exitOK {
			t.Fatalf("kfm %v after %s: exit %d\nstdout: %s\nstderr: %s", args, what, code, p.stdout.String(), p.stderr.String())
		}
		same("after "+what, take(), want)
		if st := h.hostState(); slices.ContainsFunc(st.Hooks, func(hs *chain.HookState) bool { return len(hs.Pending) > 0 || hs.Changing }) {
			t.Errorf("pending or changing hooks left in the host state: %+v", st.Hooks)
		}
		final := programIDs(h.status())
		for id, name := range left {
			if _, ok := final[id]; ok {
				continue
			}
			if prog, err := ebpf.NewProgramFromID(id); err == nil {
				prog.Close()
				t.Errorf("program %d (%s), left by the killed kfm, is still in the kernel", id, name)
			}
		}
		if out := h.mustKFM("apply", "--locked"); strings.Count(out, "unchanged") != 2 {
			t.Errorf("apply --locked after recovering: %s", out)
		}
	}
	use := func(manifest string, s snapshot) {
		h.writeConfig("kfm.yaml", manifest)
		h.writeConfig("kfm.lock", s.lock)
	}

	// rolled-back: apply --locked of lock B, killed; then the operator
	// puts A's files back and applies them; locked: apply --locked of lock
	// B, then again; edited: apply of kfm.yaml B with lock A, then again
	// (it re-locks).
	for _, mode := range []string{"rolled-back", "locked", "edited"} {
		for _, step := range crashSteps {
			t.Run(mode+"/"+step, func(st *testing.T) {
				h.t = st
				defer func() { h.t = t }()
				// Back to A.
				use(manifestA, cleanA)
				h.mustKFM("apply", "--locked")
				same("chain A", take(), cleanA)

				use(manifestB, cleanB)
				args := []string{"apply", "--locked"}
				if mode == "edited" {
					h.writeConfig("kfm.lock", cleanA.lock)
					args = []string{"apply"}
				}
				p := h.start([]string{"KFM_TEST_CRASH_AT=" + step}, args...)
				if code, sig := p.wait(st, time.Minute); sig != syscall.SIGKILL {
					st.Fatalf("kfm %v with KFM_TEST_CRASH_AT=%s: exit %d, signal %v, want SIGKILL\nstdout: %s\nstderr: %s", args, step, code, sig, p.stdout.String(), p.stderr.String())
				}
				left := map[ebpf.ProgramID]string{}
				leftovers(left)
				st.Logf("killed at %s: %d programs reachable or pending", step, len(left))
				want := cleanB
				if mode == "rolled-back" {
					use(manifestA, cleanA)
					want = cleanA
				}
				recover(st, "the crash at "+step, args, want, left)
			})
		}
	}

	// Two crashes in a row: an apply of B killed once both hooks run B
	// (but before the state says so), then an apply back to A killed at
	// each step; then A is applied.
	for _, step := range crashSteps {
		t.Run("twice/"+step, func(st *testing.T) {
			h.t = st
			defer func() { h.t = t }()
			use(manifestA, cleanA)
			h.mustKFM("apply", "--locked")
			left := map[ebpf.ProgramID]string{}
			for _, c := range []struct {
				manifest string
				files    snapshot
				step     string
			}{{manifestB, cleanB, "committed-2"}, {manifestA, cleanA, step}} {
				use(c.manifest, c.files)
				p := h.start([]string{"KFM_TEST_CRASH_AT=" + c.step}, "apply", "--locked")
				if _, sig := p.wait(st, time.Minute); sig != syscall.SIGKILL {
					st.Fatalf("apply with KFM_TEST_CRASH_AT=%s was not killed: %s", c.step, p.stderr.String())
				}
				leftovers(left)
			}
			recover(st, "two crashes", []string{"apply", "--locked"}, cleanA, left)
		})
	}

	// Kills at random moments, also inside the backends' commits, the
	// registry reads and the state writes: applies of A and B in turn,
	// each killed after a random part of the time an apply takes.
	t.Run("random", func(st *testing.T) {
		h.t = st
		defer func() { h.t = t }()
		var took time.Duration
		for _, m := range []string{manifestA, manifestB} {
			if m == manifestA {
				use(manifestA, cleanA)
			} else {
				use(manifestB, cleanB)
			}
			begin := time.Now()
			if code, _ := h.start(nil, "apply", "--locked").wait(st, time.Minute); code != exitOK {
				st.Fatalf("apply: exit %d", code)
			}
			took += time.Since(begin) / 2
		}
		seed := uint64(time.Now().UnixNano())
		rng := rand.New(rand.NewPCG(seed, 7))
		st.Logf("an apply takes %s; seed %d", took, seed)
		left := map[ebpf.ProgramID]string{}
		killed := 0
		for i := 0; i < 12; i++ {
			if i%2 == 0 {
				use(manifestA, cleanA)
			} else {
				use(manifestB, cleanB)
			}
			p := h.start(nil, "apply", "--locked")
			time.Sleep(time.Duration(rng.Int64N(int64(took))))
			p.cmd.Process.Kill()
			if _, sig := p.wait(st, time.Minute); sig == syscall.SIGKILL {
				killed++
			}
			leftovers(left)
		}
		st.Logf("%d of 12 applies killed; %d programs reachable or pending in between", killed, len(left))
		use(manifestB, cleanB)
		recover(st, "random kills", []string{"apply", "--locked"}, cleanB, left)
	})

	h.t = t
	use(manifestB, cleanB)
	h.mustKFM("apply", "--locked")
	if got := h.traffic(10, 7777, 8888); got[7777] != 0 || got[8888] != 10 {
		t.Errorf("chain B after the crashes: %v", got)
	}
}

// TestChainIdempotent: applying what already runs changes nothing (same
// program IDs, pins, kfm.lock; "unchanged" for every hook), and a dry run
// reports a change without making it.
func TestChainIdempotent(t *testing.T) {
	h := newHost(t)
	for _, p := range []struct{ obj, repo string }{
		{samplesDir + "xdp_ratelimit.o", "net/ratelimit"},
		{samplesDir + "xdp_count.o", "net/count"},
		{samplesDir + "xdp_portfilter.o", "net/portfilter"},
		{samplesDir + "tc_count.o", "net/tc-count"},
	} {
		h.publish(p.obj, p.repo, "1.0.0", "")
	}
	ref := func(repo string) string { return h.reg.Ref("net/"+repo, "1.0.0") }
	manifest := fmt.Sprintf(`version: 1
chains:
  - interface: %[1]s
    hook: xdp
    programs:
      - {name: ratelimit, ref: %[2]q, priority: 10, params: {rate: "2000"}}
      - {name: count, ref: %[3]q, priority: 30}
  - interface: %[1]s
    hook: tc-ingress
    programs:
      - {name: tc-count, ref: %[4]q}
`, h.iface, ref("ratelimit"), ref("count"), ref("tc-count"))
	h.writeConfig("kfm.yaml", manifest)
	out := h.mustKFM("apply")
	if !strings.Contains(out, "add ratelimit, count") || !strings.Contains(out, "add tc-count") || !strings.Contains(out, "kfm.lock updated") {
		t.Errorf("first apply: %s", out)
	}
	hs := h.status()
	ids, pins, lock := programIDs(hs), h.pinTree(), h.readConfig("kfm.lock")
	h.checkKernel(hs)
	for _, args := range [][]string{{"apply"}, {"apply", "--locked"}, {"apply", "--dry-run"}} {
		out := h.mustKFM(args...)
		if strings.Count(out, ": unchanged\n") != 2 || strings.Contains(out, "kfm.lock") {
			t.Errorf("kfm %v of what runs: %s", args, out)
		}
		if got := programIDs(h.status()); !maps.Equal(got, ids) {
			t.Errorf("kfm %v changed the programs: %v, before %v", args, got, ids)
		}
		if got := h.pinTree(); !slices.Equal(got, pins) {
			t.Errorf("kfm %v changed the pins: %v", args, got)
		}
		if h.readConfig("kfm.lock") != lock {
			t.Errorf("kfm %v changed kfm.lock", args)
		}
	}

	// A dry run of a change says what would change, and changes nothing.
	h.writeConfig("kfm.yaml", strings.Replace(manifest, "      - {name: count", fmt.Sprintf("      - {name: portfilter, ref: %q, priority: 20}\n      - {name: count", ref("portfilter")), 1))
	out = h.mustKFM("apply", "--dry-run")
	if !strings.Contains(out, "would apply: add portfilter") || !strings.Contains(out, "chain: ratelimit -> portfilter -> count") || !strings.Contains(out, "kfm.lock would change") {
		t.Errorf("dry run: %s", out)
	}
	if got := programIDs(h.status()); !maps.Equal(got, ids) || h.readConfig("kfm.lock") != lock || !slices.Equal(h.pinTree(), pins) {
		t.Errorf("the dry run changed something: programs %v (before %v)", got, ids)
	}
}

// TestChainConcurrency: kfm processes on one host take turns on the host
// lock. While one apply holds it (stopped with SIGSTOP at a moment it is
// seen holding it), an install waits and says for whom, an apply with a
// short --lock-timeout gives up with exit status 5; once the holder goes on,
// both changes land: kfm.yaml, kfm.lock and the kernel have both. Two
// applies started together both succeed, one after the other: one makes
// the change, the other finds it made.
func TestChainConcurrency(t *testing.T) {
	h := newHost(t)
	for _, p := range []struct{ obj, repo string }{
		{samplesDir + "xdp_ratelimit.o", "net/ratelimit"},
		{samplesDir + "xdp_count.o", "net/count"},
		{samplesDir + "xdp_portfilter.o", "net/portfilter"},
	} {
		h.publish(p.obj, p.repo, "1.0.0", "")
	}
	ref := func(repo string) string { return h.reg.Ref("net/"+repo, "1.0.0") }
	lockFile := filepath.Join(h.stateDir, "lock")
	manifest := func(progs ...string) string {
		s := fmt.Sprintf("version: 1\nchains:\n  - interface: %s\n    hook: xdp\n    programs:\n", h.iface)
		for i, p := range progs {
			s += fmt.Sprintf("      - {name: %s, ref: %q, priority: %d}\n", p, ref(p), 10*(i+1))
		}
		return s
	}

	// Catch an apply holding the lock: its pid is in the lock file while
	// it holds it. A run can be too quick to catch; then try again with
	// the other chain.
	var holder *proc
	for attempt := 0; holder == nil && attempt < 5; attempt++ {
		progs := []string{"ratelimit"}
		if attempt%2 == 1 {
			progs = []string{"count"}
		}
		h.writeConfig("kfm.yaml", manifest(progs...))
		p := h.start(nil, "apply")
		pid := strconv.Itoa(p.cmd.Process.Pid)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if b, _ := os.ReadFile(lockFile); strings.TrimSpace(string(b)) == pid {
				p.cmd.Process.Signal(syscall.SIGSTOP)
				// Still holding it (not just releasing)?
				if b, _ := os.ReadFile(lockFile); strings.TrimSpace(string(b)) == pid {
					holder = p
				} else {
					p.cmd.Process.Signal(syscall.SIGCONT)
				}
				break
			}
			select {
			case <-p.done:
				deadline = time.Now()
			default:
				time.Sleep(200 * time.Microsecond)
			}
		}
		if holder == nil {
			if code, _ := p.wait(t, time.Minute); code != exitOK {
				t.Fatalf("apply: exit %d: %s", code, p.stderr.String())
			}
		}
	}
	if holder == nil {
		t.Fatal("never caught an apply holding the host lock")
	}
	t.Cleanup(func() { holder.cmd.Process.Signal(syscall.SIGCONT) })
	holderManifest := h.readConfig("kfm.yaml")
	holderPID := strconv.Itoa(holder.cmd.Process.Pid)

	// An install waits for it...
	install := h.start(nil, "install", ref("portfilter"), "--iface", h.iface, "--name", "portfilter", "--priority", "20", "--param", "port=7777")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(install.stderr.String(), "waiting for the kfm host lock"); {
		if time.Now().After(deadline) {
			t.Fatalf("install did not say it waits: %s", install.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if msg := install.stderr.String(); !strings.Contains(msg, lockFile) || !strings.Contains(msg, "held by kfm pid "+holderPID) {
		t.Errorf("the waiting notice does not say which lock and who holds it: %s", msg)
	}
	// ...an apply with a short timeout gives up.
	impatient := h.start(nil, "apply", "--lock-timeout", "300ms")
	if code, _ := impatient.wait(t, 10*time.Second); code != exitBusy || !strings.Contains(impatient.stderr.String(), "timed out waiting for the kfm host lock") || !strings.Contains(impatient.stderr.String(), "kfm pid "+holderPID) {
		t.Errorf("apply --lock-timeout 300ms: exit %d (want %d): %s", code, exitBusy, impatient.stderr.String())
	}
	t.Logf("apply --lock-timeout 300ms: %s", impatient.stderr.String())
	select {
	case <-install.done:
		t.Fatalf("install finished while the lock was held: %s", install.stderr.String())
	default:
	}

	holder.cmd.Process.Signal(syscall.SIGCONT)
	for _, p := range []*proc{holder, install} {
		if code, _ := p.wait(t, time.Minute); code != exitOK {
			t.Fatalf("kfm %v: exit %d: %s", p.cmd.Args[1:], code, p.stderr.String())
		}
	}
	// Both changes are in: the holder's chain, and portfilter (which the
	// install added to the kfm.yaml the holder applied, not to an older
	// one).
	first := "ratelimit"
	if strings.Contains(holderManifest, "name: count") {
		first = "count"
	}
	man := h.readConfig("kfm.yaml")
	if !strings.Contains(man, "name: "+first) || !strings.Contains(man, "name: portfilter") {
		t.Errorf("kfm.yaml after both: %s", man)
	}
	var names []string
	for _, lp := range h.lock().Chains[0].Programs {
		names = append(names, lp.Name)
	}
	if want := []string{first, "portfilter"}; !slices.Equal(names, want) {
		t.Errorf("kfm.lock after both: %v, want %v", names, want)
	}
	hs := h.status()
	if v := hook(hs, h.iface, "xdp"); len(v.Drift) != 0 || len(v.Programs) != 2 {
		t.Errorf("status after both: %+v", v)
	}
	h.checkKernel(hs)

	// Two applies at once of a changed kfm.yaml.
	h.writeConfig("kfm.yaml", manifest("ratelimit", "portfilter", "count"))
	a, b := h.start(nil, "apply"), h.start(nil, "apply")
	changed := 0
	for _, p := range []*proc{a, b} {
		if code, _ := p.wait(t, time.Minute); code != exitOK {
			t.Fatalf("concurrent apply: exit %d: %s", code, p.stderr.String())
		}
		out := p.stdout.String()
		switch {
		case strings.Contains(out, "applied:"):
			changed++
		case !strings.Contains(out, ": unchanged"):
			t.Errorf("concurrent apply: %s", out)
		}
		t.Logf("concurrent apply: %s%s", p.stderr.String(), out)
	}
	if changed != 1 {
		t.Errorf("%d of the two concurrent applies changed the chain, want 1", changed)
	}
	hs = h.status()
	if got := chainView(hookOf(hs, h.iface, "xdp")); len(got) != 3 || len(hookOf(hs, h.iface, "xdp").Drift) != 0 {
		t.Errorf("chain after the concurrent applies: %v", got)
	}
	h.checkKernel(hs)
}

// TestChainInstallCrash kills kfm install at each checkpoint (one hook:
// there is no committed-2) and runs the same install again: kfm.yaml,
// kfm.lock, the chain and the pins end as after an uninterrupted install,
// with nothing else left in the kernel; kfm remove then brings the host back
// to where it was.
func TestChainInstallCrash(t *testing.T) {
	h := newHost(t)
	h.publish(samplesDir+"xdp_ratelimit.o", "net/ratelimit", "1.0.0", "")
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.mustKFM("install", h.reg.Ref("net/ratelimit", "1.0.0"), "--iface", h.iface, "--name", "ratelimit", "--priority", "10")
	type snapshot struct {
		manifest, lock string
		chain, pins    []string
	}
	take := func() snapshot {
		hs := h.status()
		h.checkKernel(hs)
		xdp := hookOf(hs, h.iface, "xdp")
		if xdp == nil || len(xdp.Drift) != 0 {
			h.t.Errorf("no chain, or drift from kfm.lock: %+v", xdp)
		}
		return snapshot{h.readConfig("kfm.yaml"), h.readConfig("kfm.lock"), chainView(xdp), h.pinTree()}
	}
	same := func(what string, got, want snapshot) {
		h.t.Helper()
		if got.manifest != want.manifest || got.lock != want.lock {
			h.t.Errorf("%s: kfm.yaml/kfm.lock:\n%s\n%s\nwant:\n%s\n%s", what, got.manifest, got.lock, want.manifest, want.lock)
		}
		if !slices.Equal(got.chain, want.chain) || !slices.Equal(got.pins, want.pins) {
			h.t.Errorf("%s: chain %v, pins %v\nwant chain %v, pins %v", what, got.chain, got.pins, want.chain, want.pins)
		}
	}
	before := take()
	install := []string{"install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--name", "count", "--priority", "30"}
	h.mustKFM(install...)
	clean := take()
	h.mustKFM("remove", "count", "--iface", h.iface)
	same("removed", take(), before)

	for _, step := range []string{"prepared", "written-ahead", "committed-1", "cleaned-up", "state-saved", "files-saved"} {
		t.Run(step, func(st *testing.T) {
			h.t = st
			defer func() { h.t = t }()
			p := h.start([]string{"KFM_TEST_CRASH_AT=" + step}, install...)
			if _, sig := p.wait(st, time.Minute); sig != syscall.SIGKILL {
				st.Fatalf("install with KFM_TEST_CRASH_AT=%s was not killed: %s", step, p.stderr.String())
			}
			p = h.start(nil, install...)
			if code, _ := p.wait(st, time.Minute); code != exitOK {
				st.Fatalf("install again: exit %d: %s", code, p.stderr.String())
			}
			same("installed again", take(), clean)
			h.mustKFM("remove", "count", "--iface", h.iface)
			same("removed", take(), before)
		})
	}
}

// TestChainFirstInstallCrash: the very first install on a host, killed
// after it switched the hook but before it wrote kfm.yaml, leaves a program
// that no file names. kfm status shows it as drift, kfm apply refuses (no
// kfm.yaml) with a hint, and kfm remove takes it off by name: no chain, no
// pins and no files are left, as before the install.
func TestChainFirstInstallCrash(t *testing.T) {
	h := newHost(t)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	before := h.pinTree()
	for _, step := range []string{"committed-1", "cleaned-up", "state-saved"} {
		t.Run(step, func(st *testing.T) {
			h.t = st
			defer func() { h.t = t }()
			p := h.start([]string{"KFM_TEST_CRASH_AT=" + step}, "install", h.reg.Ref("net/count", "1.0.0"), "--iface", h.iface, "--name", "count")
			if _, sig := p.wait(st, time.Minute); sig != syscall.SIGKILL {
				st.Fatalf("install with KFM_TEST_CRASH_AT=%s was not killed: %s", step, p.stderr.String())
			}
			if m := h.readConfig("kfm.yaml"); m != "" {
				st.Fatalf("the killed install wrote kfm.yaml:\n%s", m)
			}
			xdp := hookOf(h.status(), h.iface, "xdp")
			if got := chainView(xdp); len(got) != 1 || !strings.HasPrefix(got[0], "0 count ") {
				st.Fatalf("after the kill the hook runs %v, want count", got)
			}
			if !slices.ContainsFunc(xdp.Drift, func(d string) bool { return strings.Contains(d, "not in kfm.lock: count") }) {
				st.Errorf("status reports no drift for count: %q", xdp.Drift)
			}
			if _, stderr, code := h.kfm("apply"); code != exitFailure || !strings.Contains(stderr, "kfm.yaml") {
				st.Errorf("kfm apply without kfm.yaml: exit %d: %s", code, stderr)
			}
			out := h.mustKFM("remove", "count", "--iface", h.iface)
			if !strings.Contains(out, "removed count") {
				st.Errorf("kfm remove: %s", out)
			}
			hs := h.status()
			h.checkKernel(hs)
			if xdp := hookOf(hs, h.iface, "xdp"); xdp != nil {
				st.Errorf("a chain is left after kfm remove: %+v", xdp)
			}
			if got := h.pinTree(); !slices.Equal(got, before) {
				st.Errorf("pins after kfm remove: %v, want %v", got, before)
			}
			if m, l := h.readConfig("kfm.yaml"), h.readConfig("kfm.lock"); m != "" || l != "" {
				st.Errorf("kfm remove wrote files:\n%s\n%s", m, l)
			}
		})
	}
}

// TestChainBackendSwitchCrash: kfm install switching a chain from tcx to
// tailcall, killed after the tailcall backend pinned its new chain but
// before the host state named it (found by TestModel). kfm.yaml still says
// tcx, so the next kfm apply finishes the interrupted change on tcx; it must
// also remove what the tailcall backend left pinned, which nothing would
// remove later.
func TestChainBackendSwitchCrash(t *testing.T) {
	h := newHost(t)
	h.publish(samplesDir+"tc_count.o", "net/tc-count", "1.0.0", "")
	install := []string{"install", h.reg.Ref("net/tc-count", "1.0.0"), "--iface", h.iface, "--hook", "tc-ingress", "--name", "tc-count"}
	h.mustKFM(append(install, "--backend", "tcx")...)
	clean := h.pinTree()

	p := h.start([]string{"KFM_TEST_CRASH_AT=prepared"}, append(install, "--backend", "tailcall")...)
	if _, sig := p.wait(t, time.Minute); sig != syscall.SIGKILL {
		t.Fatalf("install --backend tailcall with KFM_TEST_CRASH_AT=prepared was not killed: %s", p.stderr.String())
	}
	if got := h.pinTree(); !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, "kfm/tailcall/") }) {
		t.Fatalf("the killed switch left no tailcall pins to clean up (the test no longer reaches its case): %v", got)
	}

	h.mustKFM("apply")
	hs := h.status()
	h.checkKernel(hs)
	if tc := hookOf(hs, h.iface, "tc-ingress"); tc == nil || tc.Backend != "tcx" || len(tc.Drift) > 0 {
		t.Fatalf("after kfm apply tc-ingress runs %+v, want tc-count on tcx without drift", tc)
	}
	if got := h.pinTree(); !slices.Equal(got, clean) {
		t.Errorf("pins after kfm apply:\n  %s\nwant (before the killed switch):\n  %s", strings.Join(got, "\n  "), strings.Join(clean, "\n  "))
	}
	h.mustKFM("remove", "tc-count", "--iface", h.iface, "--hook", "tc-ingress")
	h.checkEmpty()
}
