package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/kfm-project/kfm/internal/faultproxy"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// layerOf pulls ref with a client of its own and returns the digest of its
// object layer.
func layerOf(t *testing.T, ref string) digest.Digest {
	t.Helper()
	ctx := context.Background()
	c, err := cache.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := registry.NewClient(registry.Options{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	r, err := registry.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cl.Pull(ctx, r, registry.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b.ObjectDigest
}

// checkNoPartialBlobs fails the test when the OCI cache under cacheDir holds
// a blob whose bytes do not match its name or leftovers of an unfinished
// write; it reports whether it holds d.
func checkNoPartialBlobs(t *testing.T, cacheDir string, d digest.Digest) bool {
	t.Helper()
	root := filepath.Join(cacheDir, "oci")
	found := false
	_ = filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		data, rerr := os.ReadFile(p)
		if rerr != nil {
			t.Error(rerr)
			return nil
		}
		name := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(filepath.Dir(p))), filepath.Base(p))
		if digest.FromBytes(data) != name {
			t.Errorf("cache holds %s with bytes that do not match its name", p)
		}
		found = found || name == d
		return nil
	})
	if left, _ := os.ReadDir(filepath.Join(root, "ingest")); len(left) != 0 {
		t.Errorf("unfinished writes left in the cache: %v", left)
	}
	return found
}

// kfm pull through a fault-injecting proxy: retried to success where a
// retry can win (resumed with Range), a clear failure where it cannot, and
// never a partial blob in the cache.
func TestCLIPullUnderRegistryFaults(t *testing.T) {
	cacheDir := cliEnv(t)
	reg := testregistry.Start(t, testregistry.Options{})
	if _, stderr, code := kfm(t, "", "publish", testObject, reg.Ref("kfm/faults", "1.0.0")); code != exitOK {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	layer := layerOf(t, reg.Ref("kfm/faults", "1.0.0"))
	layerPath := faultproxy.Blob(layer)

	for _, tc := range []struct {
		name     string
		cert     faultproxy.Cert
		rule     *faultproxy.Rule
		wantCode int
		want     []string // in stderr
		// wantGETs of the layer and their Range headers.
		wantRanges []string
		handshakes int
	}{
		{
			name:       "503 twice, then the blob",
			rule:       &faultproxy.Rule{Method: "GET", Path: layerPath, Times: 2, Fault: faultproxy.Status(503)},
			wantCode:   exitOK,
			wantRanges: []string{"", "", ""},
		},
		{
			name:       "cut short once, resumed",
			rule:       &faultproxy.Rule{Method: "GET", Path: layerPath, Times: 1, Fault: faultproxy.Truncate(4096)},
			wantCode:   exitOK,
			wantRanges: []string{"", "bytes=4096-"},
		},
		{
			name:       "503 on every try",
			rule:       &faultproxy.Rule{Method: "GET", Path: layerPath, Fault: faultproxy.Status(503)},
			wantCode:   exitFailure,
			want:       []string{"kept failing with HTTP 503 after 3 tries", "PROXY/kfm/faults:1.0.0", "layer " + layer.String()},
			wantRanges: []string{"", "", ""},
		},
		{
			name:     "untrusted certificate",
			cert:     faultproxy.CertUntrusted,
			wantCode: exitFailure,
			want:     []string{"--ca-file", "TLS errors are not retried"},
			// One handshake: the scheme probe; no retry.
			handshakes: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(filepath.Join(cacheDir, "oci"))
			p := faultproxy.Start(t, reg.Host(), faultproxy.Options{Cert: tc.cert})
			if tc.rule != nil {
				p.Add(*tc.rule)
			}
			ref := p.Host() + "/kfm/faults:1.0.0"
			_, stderr, code := kfm(t, "", "pull", ref, "--insecure-allow-unsigned", "--registry-attempts", "3")
			if code != tc.wantCode {
				t.Fatalf("kfm pull: exit %d, want %d\n%s", code, tc.wantCode, stderr)
			}
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "PROXY", p.Host()); !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			var ranges []string
			for _, r := range p.Requests() {
				if r.Method == "GET" && strings.HasSuffix(r.Path, layer.String()) {
					// The end of the range is the blob's last byte.
					ranges = append(ranges, strings.TrimRight(r.Range, "0123456789"))
				}
			}
			if !slices.Equal(ranges, tc.wantRanges) {
				t.Errorf("GETs of the layer with Range %q, want %q", ranges, tc.wantRanges)
			}
			if p.Handshakes() != tc.handshakes {
				t.Errorf("%d TLS handshakes, want %d", p.Handshakes(), tc.handshakes)
			}
			if cached := checkNoPartialBlobs(t, cacheDir, layer); cached != (code == exitOK) {
				t.Errorf("layer cached: %v after exit %d", cached, code)
			}
		})
	}
}

// An install or apply whose pull fails leaves every hook as it was: same
// chain, same program IDs, same pins, same kfm.yaml. Once the registry
// recovers, the same install succeeds.
func TestInstallPullFailureLeavesChainsRunning(t *testing.T) {
	h := newHost(t)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	layer := layerOf(t, h.reg.Ref("net/portfilter", "1.0.0"))
	p := faultproxy.Start(t, h.reg.Host(), faultproxy.Options{})
	dead := faultproxy.DeadHost(t)
	h.writeConfig("policy.yaml", fmt.Sprintf("version: 1\nrules:\n  - match: '%s/**'\n    keys: [%s]\n", p.Host(), h.pub))

	count, filter := p.Host()+"/net/count:1.0.0", p.Host()+"/net/portfilter:1.0.0"
	h.mustKFM("install", count, "--iface", h.iface, "--name", "count")
	before := h.status()
	view, ids, pins, manifest := chainView(hookOf(before, h.iface, "xdp")), programIDs(before), h.pinTree(), h.readConfig("kfm.yaml")
	if len(view) != 1 {
		t.Fatalf("chain before the faults: %v", view)
	}
	unchanged := func(what string) {
		t.Helper()
		after := h.status()
		if got := chainView(hookOf(after, h.iface, "xdp")); !slices.Equal(got, view) {
			t.Errorf("%s: chain %v, before %v", what, got, view)
		}
		if got := programIDs(after); fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Errorf("%s: program IDs %v, before %v", what, got, ids)
		}
		h.checkKernel(after)
		if got := h.pinTree(); !slices.Equal(got, pins) {
			t.Errorf("%s: pins %v, before %v", what, got, pins)
		}
		if checkNoPartialBlobs(t, h.cacheDir, layer) {
			t.Errorf("%s: the layer that never arrived whole is in the cache", what)
		}
	}

	// (A try that brings more of the blob starts the count of tries
	// again: the faults that break a blob off bring part of it once and
	// then nothing more.)
	for _, tc := range []struct {
		name         string
		first, fault faultproxy.Fault
		want         string
	}{
		{"503", nil, faultproxy.Status(503), "kept failing with HTTP 503 after 2 tries"},
		{"reset mid-blob", faultproxy.Reset(2048), faultproxy.Reset(0), "kept failing after 2 tries"},
		{"wrong Content-Length", nil, faultproxy.ContentLength(-64), "(Content-Length)"},
		{"redirect to a dead host", nil, faultproxy.Redirect("http://" + dead), "storage host " + dead},
	} {
		p.Clear()
		if tc.first != nil {
			p.Add(faultproxy.Rule{Method: "GET", Path: faultproxy.Blob(layer), Times: 1, Fault: tc.first})
		}
		p.Add(faultproxy.Rule{Method: "GET", Path: faultproxy.Blob(layer), Fault: tc.fault})
		_, stderr, code := h.kfm("install", filter, "--iface", h.iface, "--name", "filter", "--registry-attempts", "2")
		if code != exitFailure || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, filter) {
			t.Errorf("install under %s: exit %d, want %d and %q naming %s:\n%s", tc.name, code, exitFailure, tc.want, filter, stderr)
		}
		t.Logf("install under %s: %s", tc.name, strings.TrimSpace(stderr))
		unchanged("install under " + tc.name)
		if got := h.readConfig("kfm.yaml"); got != manifest {
			t.Errorf("install under %s changed kfm.yaml:\n%s", tc.name, got)
		}
	}

	// kfm apply of a manifest that adds the program: the same.
	h.writeConfig("kfm.yaml", fmt.Sprintf("version: 1\nchains:\n  - interface: %s\n    hook: xdp\n    programs:\n"+
		"      - name: count\n        ref: %s\n      - name: filter\n        ref: %s\n        priority: 60\n", h.iface, count, filter))
	p.Clear()
	p.Add(faultproxy.Rule{Method: "GET", Path: faultproxy.Blob(layer), Times: 1, Fault: faultproxy.Truncate(1024)})
	p.Add(faultproxy.Rule{Method: "GET", Path: faultproxy.Blob(layer), Fault: faultproxy.Truncate(0)})
	_, stderr, code := h.kfm("apply", "--registry-attempts", "2")
	if code != exitFailure || !strings.Contains(stderr, "kept failing after 2 tries") {
		t.Errorf("apply under truncated bodies: exit %d:\n%s", code, stderr)
	}
	unchanged("apply under truncated bodies")

	// The registry recovers: the same install goes through.
	p.Clear()
	h.writeConfig("kfm.yaml", manifest)
	h.mustKFM("install", filter, "--iface", h.iface, "--name", "filter")
	if got := chainView(hookOf(h.status(), h.iface, "xdp")); len(got) != 2 {
		t.Errorf("chain after the registry recovered: %v", got)
	}
	h.mustKFM("remove", "filter", "--iface", h.iface)
	h.mustKFM("remove", "count", "--iface", h.iface)
	h.checkEmpty()
}
