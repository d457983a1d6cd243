package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/testregistry"
)

// TestRemoveNeedsNoTrust: removal is never blocked by the trust policy. Two
// programs from a real registry are installed with --insecure-allow-unsigned
// on a host without policy.yaml; kfm remove of one (no flag) succeeds, and
// the other keeps running and filtering. An apply whose kfm.yaml only
// drops a program succeeds the same way. Installing a new program without
// the flag is still refused (exit 3): only the programs that stay, by
// their locked digests, skip the policy.
func TestRemoveNeedsNoTrust(t *testing.T) {
	h := newHost(t)
	if err := os.Remove(filepath.Join(h.configDir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	install := func(name, prio string, extra ...string) (string, int) {
		args := append([]string{"install", h.reg.Ref("net/"+name, "1.0.0"), "--iface", h.iface, "--name", name, "--priority", prio, "--param", "port=7777"}, extra...)
		if name == "count" {
			args = slices.DeleteFunc(args, func(a string) bool { return a == "--param" || a == "port=7777" })
		}
		_, stderr, code := h.kfm(args...)
		return stderr, code
	}
	for _, p := range [][2]string{{"portfilter", "10"}, {"count", "20"}} {
		if stderr, code := install(p[0], p[1], "--insecure-allow-unsigned"); code != exitOK {
			t.Fatalf("install %s --insecure-allow-unsigned: exit %d: %s", p[0], code, stderr)
		}
	}
	if got := h.traffic(20, 7777, 8888); got[7777] != 0 || got[8888] != 20 {
		t.Fatalf("with portfilter and count installed, received %v (want 0 to 7777, 20 to 8888)", got)
	}

	// The reported case: remove one, the other stays, no policy asked.
	out, stderr, code := h.kfm("remove", "count", "--iface", h.iface)
	if code != exitOK {
		t.Fatalf("remove count without a trust policy: exit %d (want 0)\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	if names := h.names(); !slices.Equal(names, []string{"portfilter"}) {
		t.Fatalf("chain after removing count: %v (want portfilter alone)", names)
	}
	if got := h.traffic(20, 7777, 8888); got[7777] != 0 || got[8888] != 20 {
		t.Errorf("after removing count, received %v: portfilter should still drop 7777 and pass 8888", got)
	}

	// A new program still needs the policy (or the flag).
	if stderr, code := install("count", "20"); code != exitTrust || !strings.Contains(stderr, "no trust policy") {
		t.Errorf("install without policy or flag: exit %d (want %d): %s", code, exitTrust, stderr)
	}
	if stderr, code := install("count", "20", "--insecure-allow-unsigned"); code != exitOK {
		t.Fatalf("install count again: exit %d: %s", code, stderr)
	}

	// An apply that only drops a program from kfm.yaml.
	man, err := chain.LoadManifest(filepath.Join(h.configDir, "kfm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range man.Chains {
		man.Chains[i].Programs = slices.DeleteFunc(man.Chains[i].Programs, func(p chain.ProgramSpec) bool { return p.Name == "count" })
	}
	text, err := man.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h.writeConfig("kfm.yaml", string(text))
	if out, stderr, code := h.kfm("apply"); code != exitOK || !strings.Contains(out, "remove count") {
		t.Fatalf("apply that only removes, without a trust policy: exit %d (want 0)\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	if names := h.names(); !slices.Equal(names, []string{"portfilter"}) {
		t.Errorf("chain after apply: %v (want portfilter alone)", names)
	}
	if got := h.traffic(20, 7777, 8888); got[7777] != 0 || got[8888] != 20 {
		t.Errorf("after apply, received %v: portfilter should still drop 7777 and pass 8888", got)
	}
	h.mustKFM("remove", "portfilter", "--iface", h.iface)
	h.checkEmpty()
}

// names lists the programs of the XDP chain in run order, as kfm status
// reports them.
func (h *host) names() []string {
	var out []string
	if hs := hookOf(h.status(), h.iface, "xdp"); hs != nil {
		for _, p := range hs.Programs {
			out = append(out, p.Name)
		}
	}
	return out
}

// TestInspectRegistryDown: kfm inspect REF@digest with the registry gone
// checks the signatures cached with the bundle (no --offline needed) and
// says that they come from the cache only.
func TestInspectRegistryDown(t *testing.T) {
	cliEnv(t)
	reg := testregistry.Start(t, testregistry.Options{})
	key, pub := keyPair(t, "pw")
	t.Setenv("KFM_PASSWORD", "pw")
	ref := reg.Ref("net/signed", "1.0.0")
	out, stderr, code := kfm(t, "", "publish", testObject, ref, "--sign", "--key", key, "-o", "json")
	if code != exitOK {
		t.Fatalf("publish --sign: %s", stderr)
	}
	var pub1 publishResult
	if err := json.Unmarshal([]byte(out), &pub1); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pinned := reg.Host() + "/net/signed@" + pub1.Digest
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte("version: 1\nrules:\n  - match: '"+reg.Host()+"/net/*'\n    keys: ["+pub+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Online: the bundle and its signatures come into the cache.
	if out, stderr, code := kfm(t, "", "inspect", pinned, "--policy", policy); code != exitOK || !strings.Contains(out, "accepted:") || strings.Contains(out, "from the cache only") {
		t.Fatalf("inspect with the registry up: exit %d\n%s\n%s", code, out, stderr)
	}

	reg.Stop()
	out, stderr, code = kfm(t, "", "inspect", pinned, "--policy", policy, "-o", "json")
	if code != exitOK {
		t.Fatalf("inspect REF@digest with the registry down: exit %d (want 0)\n%s", code, stderr)
	}
	var got struct {
		Digest     string `json:"digest"`
		Signatures struct {
			Signer     *struct{ Key string }
			Signatures []struct{ Verified bool }
			CacheOnly  string `json:"cacheOnly"`
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Digest != pub1.Digest || got.Signatures.Signer == nil || len(got.Signatures.Signatures) != 1 || !got.Signatures.Signatures[0].Verified {
		t.Errorf("inspect from the cache: %s", out)
	}
	if got.Signatures.CacheOnly == "" || !strings.Contains(stderr, "signatures from the cache only") {
		t.Errorf("inspect with the registry down does not say the signatures come from the cache: cacheOnly %q, stderr %q", got.Signatures.CacheOnly, stderr)
	}
	out, _, code = kfm(t, "", "inspect", pinned, "--policy", policy)
	if code != exitOK || !strings.Contains(out, "from the cache only") || !strings.Contains(out, "accepted:") {
		t.Errorf("text inspect with the registry down: exit %d\n%s", code, out)
	}

	// A digest the cache never saw still fails, naming it.
	missing := reg.Host() + "/net/signed@sha256:" + strings.Repeat("0", 64)
	if _, stderr, code := kfm(t, "", "inspect", missing); code == exitOK || !strings.Contains(stderr, "unreachable") {
		t.Errorf("inspect of an uncached digest with the registry down: exit %d: %s", code, stderr)
	}
}
