package compat_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf/compat"
	"github.com/kfm-project/kfm/internal/testenv"
)

// kernelAtLeast reports whether the running kernel is at least major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	r, err := compat.Check(mustSpec(t, "xdp_pass"), "xdp_pass", "")
	if err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmtSscanf(r.Kernel, &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", r.Kernel, err)
	}
	return ma > major || ma == major && mi >= minor
}

// xdp_buff_len needs bpf_xdp_get_buff_len (Linux 5.18): refused on older
// kernels with the helper named (the 5.10 kernel VM), accepted on newer
// ones (the 6.12 VM and the host).
func TestHelperMissing(t *testing.T) {
	testenv.RequirePrivileged(t)
	r, err := compat.Check(mustSpec(t, "xdp_buff_len"), "xdp_buff_len", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s: ok %v, missing %v, unknown %v", r.Kernel, r.OK, r.Missing, r.Unknown)
	if kernelAtLeast(t, 5, 18) {
		if !r.OK || r.Err() != nil {
			t.Fatalf("refused on %s: %v", r.Kernel, r.Err())
		}
		return
	}
	err = r.Err()
	if r.OK || !errors.Is(err, compat.ErrIncompatible) || !strings.Contains(err.Error(), "helper bpf_xdp_get_buff_len for xdp programs") {
		t.Fatalf("on %s: got %v, want a refusal naming bpf_xdp_get_buff_len", r.Kernel, err)
	}
}

// A program every kernel kfm supports runs is accepted; the publisher's
// minimum kernel refuses when the running kernel is older.
func TestMinKernel(t *testing.T) {
	testenv.RequirePrivileged(t)
	spec := mustSpec(t, "xdp_pass")
	for _, tt := range []struct {
		min string
		ok  bool
	}{
		{"", true},
		{"4.18", true},
		{"99.1", false},
	} {
		r, err := compat.Check(spec, "xdp_pass", tt.min)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK != tt.ok {
			t.Errorf("minimum %q on %s: ok %v, want %v (%v)", tt.min, r.Kernel, r.OK, tt.ok, r.Err())
		}
		if !tt.ok && !strings.Contains(r.Err().Error(), "kernel 99.1 or newer (the publisher's minimum)") {
			t.Errorf("minimum %q: message %v", tt.min, r.Err())
		}
	}
	if _, err := compat.Check(spec, "xdp_pass", "five"); err == nil {
		t.Error("a malformed minimum kernel gave no error")
	}
	if _, err := compat.Check(spec, "nope", ""); err == nil {
		t.Error("a missing program gave no error")
	}
}
