package tailcall

import "errors"

// NewClassicTC returns a backend that attaches TC roots as cls_bpf filters
// even where TCX exists, so that the host tests cover the path older kernels
// take.
func NewClassicTC() *Backend {
	b := New()
	b.tcxOnce.Do(func() { b.tcxErr = errors.New("TCX disabled by the test") })
	return b
}
