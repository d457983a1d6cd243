package tailcall

import (
	"errors"
	"fmt"
)

// NewClassicTC returns a backend that attaches TC roots as cls_bpf filters
// even where TCX exists, so that the host tests cover the path older kernels
// take.
func NewClassicTC() *Backend {
	b := New()
	b.tcxOnce.Do(func() { b.tcxErr = errors.New("TCX disabled by the test") })
	return b
}

// NewWithoutMixedCalls returns a backend that behaves as on a kernel older
// than 5.10, whose verifier refuses tail calls from programs with
// bpf-to-bpf calls.
func NewWithoutMixedCalls() *Backend {
	b := New()
	b.mixedOnce.Do(func() { b.mixedErr = fmt.Errorf("%w (needs Linux 5.10): invalid argument", ErrMixedCalls) })
	return b
}
