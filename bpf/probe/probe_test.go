package probe_test

import (
	"errors"
	"os"
	"testing"

	"github.com/kfm-project/kfm/bpf/probe"
	"github.com/kfm-project/kfm/internal/testenv"
)

// TestEXT proves the point of the kernel VMs: inside them an EXT program
// loads and freplace-attaches to a global function of an XDP program; on the
// development host the sandbox refuses it and the test says so.
func TestEXT(t *testing.T) {
	testenv.RequirePrivileged(t)
	err := probe.EXT()
	if err == nil {
		t.Logf("EXT programs load, attach and re-attach on this kernel")
		return
	}
	if !errors.Is(err, probe.ErrUnsupported) {
		t.Fatalf("probe failed for a reason other than missing support: %v", err)
	}
	if os.Getenv(testenv.EnvRequireEXT) == "1" { // same rule as testenv.RequireEXT, kept explicit here
		t.Fatalf("EXT required here but refused: %v", err)
	}
	t.Skipf("kernel refuses freplace here: %v (the kernel VMs run this test with %s=1)", err, testenv.EnvRequireEXT)
}

func TestTCX(t *testing.T) {
	testenv.RequirePrivileged(t)
	err := probe.TCX()
	if err != nil && !errors.Is(err, probe.ErrUnsupported) {
		t.Fatalf("TCX probe failed: %v", err)
	}
	t.Logf("TCX: %v", err)
}
