package compat_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/internal/testprogs"
)

func mustSpec(t *testing.T, name string) *ebpf.CollectionSpec {
	t.Helper()
	s, err := testprogs.Spec(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fmtSscanf(s string, major, minor *int) (int, error) { return fmt.Sscanf(s, "%d.%d", major, minor) }
