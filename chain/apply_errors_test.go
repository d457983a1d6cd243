package chain

import (
	"errors"
	"testing"

	"github.com/kfm-project/kfm/bpf"
)

// TestHookNamedOnce: errors about a hook name it once, at the front,
// whether or not the backend's error named it already, and still wrap the
// backend's error.
func TestHookNamedOnce(t *testing.T) {
	tgt := bpf.Target{Interface: "eth0", Ifindex: 2, Hook: bpf.HookXDP}
	cause := errors.New("attach failed")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"backend named it", errors.Join(errors.New("eth0/xdp: attach the root"), cause), "eth0/xdp: switch to the new chain: attach the root\nattach failed"},
		{"backend did not", cause, "eth0/xdp: switch to the new chain: attach failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := inHook(tgt, "switch to the new chain", tc.err)
			if err.Error() != tc.want {
				t.Errorf("inHook: %q, want %q", err, tc.want)
			}
			if !errors.Is(err, cause) {
				t.Error("inHook does not wrap the cause")
			}
			if got := withTarget(tgt, tc.err).Error(); got != "eth0/xdp: "+tc.err.Error() && got != tc.err.Error() {
				t.Errorf("withTarget: %q", got)
			}
			if got := withTarget(tgt, withTarget(tgt, tc.err)).Error(); got != withTarget(tgt, tc.err).Error() {
				t.Errorf("withTarget twice: %q", got)
			}
		})
	}
}
