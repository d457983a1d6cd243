package kernelvm

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// The runner refuses bad plans before it fetches or builds anything.
func TestRunRefusesBadPlans(t *testing.T) {
	only510, err := SelectKernels(DefaultKernels(), "5.10")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		o       Options
		wantErr string
		is      error
	}{
		{"no suite for the kernel", Options{Kernels: only510, Suites: []Suite{{Package: "bpf/probe", Kernels: []string{"6.12"}}}}, "no suite applies", ErrNoMatch},
		{"invalid suite list", Options{Kernels: only510, Suites: []Suite{{Package: "./bpf/probe"}}}, "internal/kernelvm/suites.go", nil},
	} {
		tc.o.CacheDir, tc.o.WorkDir = t.TempDir(), t.TempDir()
		_, _, err := Run(context.Background(), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}
