package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/vbauerster/mpb/v8"

	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
)

// kfm runs the command in-process and returns stdout, stderr and the exit
// status.
func kfm(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, stdio{in: strings.NewReader(stdin), out: &out, err: &errOut})
	return out.String(), errOut.String(), code
}

// cliEnv gives the test its own cache and Docker credential store.
func cliEnv(t *testing.T) (cacheDir string) {
	t.Helper()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	cacheDir = t.TempDir()
	t.Setenv("KFM_CACHE_DIR", cacheDir)
	t.Setenv("KFM_CONFIG_DIR", t.TempDir())
	t.Setenv("KFM_STATE_DIR", t.TempDir())
	t.Setenv("SOURCE_DATE_EPOCH", "")
	return cacheDir
}

const testObject = "../../bpf/testdata/params.o"

func TestCLIPublishPullInspect(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts testregistry.Options
	}{
		{"plain", testregistry.Options{}},
		{"basic-auth", testregistry.Options{Auth: testregistry.AuthBasic}},
		{"tls", testregistry.Options{TLS: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cliEnv(t)
			r := testregistry.Start(t, tc.opts)
			var flags []string
			if r.TLS() {
				flags = append(flags, "--ca-file", r.CAFile())
			}
			if r.Username() != "" {
				// Without credentials: refused, with a login hint.
				_, stderr, code := kfm(t, "", append([]string{"publish", testObject, r.Ref("kfm/params", "1.0.0")}, flags...)...)
				if code != exitFailure || !strings.Contains(stderr, "kfm login "+r.Host()) {
					t.Fatalf("publish without login: exit %d, %s", code, stderr)
				}
				_, stderr, code = kfm(t, "wrong\n", append([]string{"login", r.Host(), "-u", r.Username(), "--password-stdin"}, flags...)...)
				if code != exitFailure || !strings.Contains(stderr, "unauthorized") {
					t.Fatalf("login with a wrong password: exit %d, %s", code, stderr)
				}
				out, stderr, code := kfm(t, r.Password()+"\n", append([]string{"login", r.Host(), "-u", r.Username(), "--password-stdin"}, flags...)...)
				if code != exitOK || !strings.Contains(out, "Login Succeeded") {
					t.Fatalf("login: exit %d, %s %s", code, out, stderr)
				}
				// Stored where docker and oras look.
				cfg, err := os.ReadFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"))
				if err != nil || !strings.Contains(string(cfg), r.Host()) {
					t.Fatalf("docker config after login: %s, %v", cfg, err)
				}
			}

			out, stderr, code := kfm(t, "", append([]string{"publish", testObject, r.Ref("kfm/params", "1.0.0"), "-o", "json", "--description", "demo"}, flags...)...)
			if code != exitOK {
				t.Fatalf("publish: exit %d: %s", code, stderr)
			}
			var pub publishResult
			if err := json.Unmarshal([]byte(out), &pub); err != nil {
				t.Fatalf("publish -o json: %v: %s", err, out)
			}
			if pub.Reference != r.Ref("kfm/params", "1.0.0")+"@"+pub.Digest || pub.Size <= 0 || pub.Name != "params" || pub.Version != "1.0.0" {
				t.Fatalf("publish result %+v", pub)
			}
			// Text output: the pinned reference, same digest (reproducible).
			out, _, code = kfm(t, "", append([]string{"publish", testObject, r.Ref("kfm/params", "1.0.0"), "--description", "demo"}, flags...)...)
			if code != exitOK || strings.TrimSpace(out) != pub.Reference {
				t.Fatalf("second publish: exit %d, %q, want %q", code, out, pub.Reference)
			}

			// Unsigned: refused by default (no policy), allowed loudly.
			out, stderr, code = kfm(t, "", append([]string{"pull", r.Ref("kfm/params", "1.0.0")}, flags...)...)
			if code != exitTrust || !strings.Contains(stderr, "no trust policy") || !strings.Contains(stderr, "--insecure-allow-unsigned") {
				t.Fatalf("pull of an unsigned bundle without a policy: exit %d: %s %s", code, out, stderr)
			}
			// Not a terminal: plain progress lines, no bar drawing.
			if !strings.Contains(stderr, "fetched layer sha256:") || strings.Contains(stderr, "\x1b[") {
				t.Errorf("pull progress on a pipe: %q", stderr)
			}
			out, stderr, code = kfm(t, "", append([]string{"pull", r.Ref("kfm/params", "1.0.0"), "--insecure-allow-unsigned"}, flags...)...)
			if code != exitOK || !strings.Contains(out, "Digest: "+pub.Digest) || !strings.Contains(out, "Pulled: "+pub.Reference) || !strings.Contains(out, "Signer: unsigned") {
				t.Fatalf("pull: exit %d: %s %s", code, out, stderr)
			}
			if !strings.Contains(stderr, "WITHOUT signature verification") {
				t.Errorf("pull --insecure-allow-unsigned did not warn: %s", stderr)
			}

			out, stderr, code = kfm(t, "", append([]string{"inspect", r.Ref("kfm/params", "1.0.0")}, flags...)...)
			if code != exitOK {
				t.Fatalf("inspect: exit %d: %s", code, stderr)
			}
			for _, want := range []string{pub.Digest, "description:  demo", "with_config", "tc_prog", "without_config"} {
				if !strings.Contains(out, want) {
					t.Errorf("inspect output lacks %q:\n%s", want, out)
				}
			}

			// Offline with the registry gone: pull and inspect from the cache.
			r.Stop()
			out, stderr, code = kfm(t, "", "pull", "--offline", "--insecure-allow-unsigned", r.Ref("kfm/params", "1.0.0"), "-o", "json")
			if code != exitOK || !strings.Contains(out, pub.Digest) {
				t.Fatalf("offline pull: exit %d: %s %s", code, out, stderr)
			}
			out, stderr, code = kfm(t, "", "inspect", "--offline", r.Ref("kfm/params", "1.0.0"), "-o", "json")
			if code != exitOK {
				t.Fatalf("offline inspect: exit %d: %s", code, stderr)
			}
			var insp struct {
				Digest string `json:"digest"`
				Config struct {
					Name     string `json:"name"`
					Programs []struct {
						Function string `json:"function"`
						Params   []struct {
							Name    string `json:"name"`
							Default any    `json:"default"`
						} `json:"params"`
					} `json:"programs"`
				} `json:"config"`
			}
			if err := json.Unmarshal([]byte(out), &insp); err != nil || insp.Digest != pub.Digest || len(insp.Config.Programs) != 3 {
				t.Fatalf("inspect -o json: %v: %s", err, out)
			}
			_, stderr, code = kfm(t, "", "pull", "--offline", r.Ref("kfm/params", "2.0.0"))
			if code != exitFailure || !strings.Contains(stderr, "not in the cache") {
				t.Errorf("offline pull of an uncached tag: exit %d: %s", code, stderr)
			}

			if r.Username() != "" {
				out, _, code = kfm(t, "", "logout", r.Host())
				cfg, _ := os.ReadFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"))
				if code != exitOK || strings.Contains(string(cfg), r.Host()) {
					t.Errorf("logout: exit %d %s; config still has the host: %s", code, out, cfg)
				}
			}
		})
	}
}

func TestCLIInspectBundleText(t *testing.T) {
	cliEnv(t)
	r := testregistry.Start(t, testregistry.Options{})
	bundle := filepath.Join(t.TempDir(), "bundle.yaml")
	if err := os.WriteFile(bundle, []byte("name: demo\nprograms:\n  - function: with_config\n    params:\n      - name: p_u32\n        description: the key to look up\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := kfm(t, "", "publish", testObject, r.Ref("kfm/demo", "2.0.0"), "--bundle", bundle, "--source", "https://example.com/demo"); code != exitOK {
		t.Fatalf("publish: %s", stderr)
	}
	out, stderr, code := kfm(t, "", "inspect", r.Ref("kfm/demo", "2.0.0"))
	if code != exitOK {
		t.Fatalf("inspect: %s", stderr)
	}
	for _, want := range []string{
		"name:         demo", "version:      2.0.0", "source:       https://example.com/demo", "license:      Dual BSD/GPL", "format:       kfm",
		"object:       params.o",
		"with_config     xdp        xdp         20        drop,pass",
		"tc_prog         sched_cls  tc-ingress,tc-egress  50        ok",
		"with_config  p_u32   __u32   100      the key to look up",
		"with_config  seen  lru_hash  none",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}
	// A local object still works.
	out, _, code = kfm(t, "", "inspect", testObject)
	if code != exitOK || !strings.Contains(out, "XDP_RUN_CONFIG") {
		t.Errorf("inspect of a local object: %d %s", code, out)
	}
}

func TestCLIErrors(t *testing.T) {
	cliEnv(t)
	r := testregistry.Start(t, testregistry.Options{})
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad reference", []string{"pull", "not a ref"}, exitUsage, "invalid reference"},
		{"short name", []string{"pull", "library/x:1"}, exitUsage, "not a registry host"},
		{"missing tag", []string{"pull", r.Ref("kfm/none", "1.0.0")}, exitFailure, "not found"},
		{"no arguments", []string{"pull"}, exitUsage, "at least one reference"},
		{"publish missing file", []string{"publish", "/nonexistent.o", r.Ref("kfm/x", "1")}, exitFailure, "no such file"},
		{"publish no licence", []string{"publish", "../../bpf/testdata/nolicense.o", r.Ref("kfm/x", "1")}, exitFailure, "license"},
		{"publish bad bundle.yaml", []string{"publish", testObject, r.Ref("kfm/x", "1"), "--bundle", "/nonexistent.yaml"}, exitFailure, "no such file"},
		{"login without --password-stdin", []string{"login", r.Host(), "-u", "x"}, exitUsage, "--password-stdin"},
		{"inspect a missing object", []string{"inspect", "missing.o"}, exitFailure, "missing.o"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := kfm(t, "", tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.want)
			}
		})
	}
}

// The terminal progress display: one bar per blob, cached blobs complete at
// once, partial transfers advance.
func TestProgressBars(t *testing.T) {
	var buf bytes.Buffer
	// mpb draws only on terminals unless told otherwise.
	pb := newProgressBars(&buf, mpb.WithAutoRefresh(), mpb.WithWidth(120))
	d := "sha256:" + strings.Repeat("ab", 32)
	pb.update(registry.Progress{Reference: "r.example/x:1", Kind: "layer", Digest: digest.Digest(d), Done: 512, Total: 2048})
	pb.update(registry.Progress{Reference: "r.example/x:1", Kind: "layer", Digest: digest.Digest(d), Done: 2048, Total: 2048, Finished: true})
	pb.update(registry.Progress{Reference: "r.example/y:1", Kind: "manifest", Digest: digest.Digest(d), Done: 100, Total: 100, Cached: true, Finished: true})
	pb.wait()
	out := buf.String()
	for _, want := range []string{"x:1 layer abababababab", "y:1 manifest", "cached", "done"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output lacks %q: %q", want, out)
		}
	}
	if len(pb.bars) != 2 {
		t.Errorf("%d bars for 2 blobs", len(pb.bars))
	}
}
