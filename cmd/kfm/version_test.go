package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		// check inspects stdout and stderr.
		check func(t *testing.T, out, errOut string)
	}{
		{[]string{"version"}, exitOK, func(t *testing.T, out, _ string) {
			if !strings.HasPrefix(out, "kfm ") || !strings.Contains(out, "dispatcher protocol 2") || !strings.Contains(out, "kfm.lock version 1") {
				t.Errorf("kfm version:\n%s", out)
			}
		}},
		{[]string{"version", "-o", "json"}, exitOK, func(t *testing.T, out, _ string) {
			var v versionInfo
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if v.Version == "" || !strings.HasPrefix(v.GoVersion, "go") || v.BundleType != "application/vnd.kfm.bundle.v1" || v.DispatcherVersion != 2 || v.LockVersion != 1 || v.ManifestVersion != 1 {
				t.Errorf("kfm version -o json: %+v", v)
			}
		}},
		{[]string{"--version"}, exitOK, func(t *testing.T, out, _ string) {
			if want := "kfm " + buildVersion() + "\n"; out != want {
				t.Errorf("kfm --version: %q, want %q", out, want)
			}
		}},
		{[]string{"version", "extra"}, exitUsage, func(t *testing.T, _, errOut string) {
			if !strings.Contains(errOut, "expected no arguments") {
				t.Errorf("stderr: %s", errOut)
			}
		}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, stdio{in: strings.NewReader(""), out: &out, err: &errOut})
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, errOut.String())
			}
			tc.check(t, out.String(), errOut.String())
		})
	}
}
