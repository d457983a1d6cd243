package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/testenv"
)

var updateLauncher = flag.Bool("update", false, "rewrite launcher/help.txt and launcher/formats.json from this CLI")

// pathEnv are the environment variables behind the path flags' defaults.
var pathEnv = []string{"KFM_CONFIG_DIR", "KFM_CACHE_DIR", "KFM_STATE_DIR", "KFM_BPFFS"}

// TestLauncher: the launcher (what make build installs as bin/kfm) prints
// exactly what this CLI prints for the command lines it answers itself, its
// copies of this CLI's help and format versions are current, and every
// other command line runs the complete CLI (kfm-core beside it), or fails
// clearly when that is missing.
func TestLauncher(t *testing.T) {
	if *updateLauncher {
		writeLauncherData(t)
	}
	dir := t.TempDir()
	launcher := filepath.Join(dir, "kfm")
	goBuild(t, launcher, "./launcher")

	env := map[string]string{"KFM_CACHE_DIR": `/tmp/a "quoted" dir`, "KFM_BPFFS": "/mnt/bpf"}
	for _, args := range [][]string{
		{}, {"--help"}, {"-h"}, {"help"}, {"--version"}, {"-v"},
		{"version"}, {"version", "-o", "json"}, {"-o", "json", "version"}, {"version", "--output=json"},
		{"version", "-ojson"}, {"version", "-o", "text"},
	} {
		for _, withEnv := range []bool{false, true} {
			name := strings.Join(args, " ")
			if withEnv {
				name += " (paths from the environment)"
			}
			t.Run(name, func(t *testing.T) {
				for _, k := range pathEnv {
					t.Setenv(k, "")
				}
				if withEnv {
					for k, v := range env {
						t.Setenv(k, v)
					}
				}
				var want, wantErr bytes.Buffer
				if code := run(context.Background(), args, stdio{in: strings.NewReader(""), out: &want, err: &wantErr}); code != exitOK {
					t.Fatalf("kfm %s: exit %d: %s", name, code, wantErr.String())
				}
				var got, gotErr bytes.Buffer
				c := exec.Command(launcher, args...)
				c.Stdout, c.Stderr = &got, &gotErr
				if err := c.Run(); err != nil {
					t.Fatalf("launcher %s: %v: %s", name, err, gotErr.String())
				}
				if got.String() != want.String() {
					t.Errorf("the launcher prints\n%s\nthe CLI prints\n%s\n(after changing commands or flags: go test ./cmd/kfm -run TestLauncher -update)", got.String(), want.String())
				}
			})
		}
	}

	t.Run("without kfm-core", func(t *testing.T) {
		var stderr bytes.Buffer
		c := exec.Command(launcher, "status")
		c.Stderr = &stderr
		err := c.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
			t.Fatalf("kfm status without kfm-core: %v, want exit %d", err, exitFailure)
		}
		if !strings.Contains(stderr.String(), "kfm-core and kfm-full are missing") || !strings.Contains(stderr.String(), "make build") {
			t.Errorf("stderr does not say what is missing and how to get it: %s", stderr.String())
		}
	})

	t.Run("routing", func(t *testing.T) {
		// Stand-ins for kfm-core and kfm-full that say which ran.
		rdir := t.TempDir()
		rl := filepath.Join(rdir, "kfm")
		goBuild(t, rl, "./launcher")
		standIn := func(name string) {
			if err := os.WriteFile(filepath.Join(rdir, name), []byte("#!/bin/sh\necho "+name+" \"$@\"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		standIn("kfm-core")
		standIn("kfm-full")
		cases := []struct {
			args []string
			want string
		}{
			{[]string{"status"}, "kfm-core status"},
			{[]string{"install", "REF", "--iface", "eth0"}, "kfm-core install REF --iface eth0"},
			{[]string{"lock"}, "kfm-core lock"},
			{[]string{"--state-dir", "/x", "agent", "--source", "kubernetes"}, "kfm-full --state-dir /x agent --source kubernetes"},
			{[]string{"catalog", "build"}, "kfm-full catalog build"},
			{[]string{"completion", "bash"}, "kfm-full completion bash"},
			{[]string{"lock", "--chainset=edge"}, "kfm-full lock --chainset=edge"},
			{[]string{"help", "agent"}, "kfm-full help agent"},
		}
		check := func(what string, args []string, want string) {
			t.Helper()
			out, err := exec.Command(rl, args...).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != want {
				t.Errorf("%s: kfm %s ran %q (%v), want %q", what, strings.Join(args, " "), strings.TrimSpace(string(out)), err, want)
			}
		}
		for _, c := range cases {
			check("both installed", c.args, c.want)
		}
		// One missing: the other runs everything.
		for _, missing := range []string{"kfm-core", "kfm-full"} {
			other := "kfm-full"
			if missing == other {
				other = "kfm-core"
			}
			os.Remove(filepath.Join(rdir, missing))
			for _, c := range cases {
				check(missing+" missing", c.args, other+" "+strings.Join(c.args, " "))
			}
			standIn(missing)
		}
	})

	t.Run("other commands run kfm-core and kfm-full", func(t *testing.T) {
		if testing.Short() {
			t.Skip("builds the CLI twice")
		}
		goBuild(t, filepath.Join(dir, "kfm-core"), ".", "-tags", "kfm_core")
		goBuild(t, filepath.Join(dir, "kfm-full"), ".")
		for _, args := range [][]string{
			{"version", "--help"},     // exit 0
			{"version", "-o", "yaml"}, // usage error, exit 2
			{"no-such-command"},       // usage error, exit 2
			{"completion", "bash", "--no-descriptions"},
			{"lock", "--help"}, // kfm-core: the same flags as the complete CLI
			{"agent", "--help"},
			{"catalog", "--help"},
		} {
			var want, wantErr bytes.Buffer
			wantCode := run(context.Background(), args, stdio{in: strings.NewReader(""), out: &want, err: &wantErr})
			var stdout, stderr bytes.Buffer
			c := exec.Command(launcher, args...)
			c.Stdout, c.Stderr = &stdout, &stderr
			err := c.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != wantCode || stdout.String() != want.String() || stderr.String() != wantErr.String() {
				t.Errorf("kfm %s through the launcher: exit %d\n%s%s\nin-process: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String(), wantCode, want.String(), wantErr.String())
			}
		}
		// kfm-core run by itself says where the commands it lacks are.
		for _, args := range [][]string{{"agent", "--source", "kubernetes"}, {"catalog", "build"}} {
			var stderr bytes.Buffer
			c := exec.Command(filepath.Join(dir, "kfm-core"), args...)
			c.Stderr = &stderr
			err := c.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
				t.Errorf("kfm-core %s: %v, want exit %d", strings.Join(args, " "), err, exitFailure)
			}
			if want := "kfm " + args[0] + " is not in kfm-core"; !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "kfm-full") {
				t.Errorf("kfm-core %s: stderr does not say %q and name kfm-full: %s", strings.Join(args, " "), want, stderr.String())
			}
		}
	})
}

// writeLauncherData writes what the launcher prints from this CLI: the root
// help with @ENV@ in place of each path default, and the format versions.
func writeLauncherData(t *testing.T) {
	for _, k := range pathEnv {
		t.Setenv(k, "@"+k+"@")
	}
	var help, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, stdio{in: strings.NewReader(""), out: &help, err: &stderr}); code != exitOK {
		t.Fatalf("kfm --help: exit %d: %s", code, stderr.String())
	}
	v := currentVersion()
	v.Version, v.GoVersion, v.Platform = "", "", ""
	formats, err := json.MarshalIndent(struct {
		BundleType        string `json:"bundleArtifactType"`
		DispatcherVersion int    `json:"dispatcherVersion"`
		ManifestVersion   int    `json:"manifestVersion"`
		LockVersion       int    `json:"lockVersion"`
	}{v.BundleType, v.DispatcherVersion, v.ManifestVersion, v.LockVersion}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("launcher/help.txt", help.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("launcher/formats.json", append(formats, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// goBuild builds pkg (relative to cmd/kfm) as make build does (with extra
// go build flags), without VCS
// stamping (a test binary has none either, so both say "(devel)").
func goBuild(t *testing.T, out, pkg string, flags ...string) {
	t.Helper()
	c := exec.Command(testenv.RequireTool(t, "go"), append(append([]string{"build", "-buildvcs=false", "-trimpath", "-o", out}, flags...), pkg)...)
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}
