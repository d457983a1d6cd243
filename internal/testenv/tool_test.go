package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireTool skips without the tool, and fails instead under
// KFM_REQUIRE_TOOLS=1 (make test). The verdicts are observed in a child test
// process.
func TestRequireTool(t *testing.T) {
	if os.Getenv("KFM_TESTENV_CHILD") == "1" {
		RequireTool(t, "kfm-no-such-tool")
		t.Log("not reached")
		return
	}
	if p := RequireTool(t, "sh"); p == "" {
		t.Fatal("sh not found")
	}
	for _, tt := range []struct {
		env        []string
		wantFail   bool
		wantOutput string
	}{
		{[]string{EnvRequireTools + "=", EnvRequirePrivileged + "="}, false, "SKIP"},
		{[]string{EnvRequireTools + "=1", EnvRequirePrivileged + "="}, true, "KFM_REQUIRE_TOOLS=1 forbids skipping"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireTool$", "-test.v")
		cmd.Env = append(os.Environ(), append(tt.env, "KFM_TESTENV_CHILD=1")...)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tt.wantFail || !strings.Contains(string(out), tt.wantOutput) || strings.Contains(string(out), "not reached") {
			t.Errorf("%v: failed=%v, want %v, output:\n%s", tt.env, failed, tt.wantFail, out)
		}
	}
}
