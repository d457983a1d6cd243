package chain

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kfm-project/kfm/bpf"
)

// ErrUnknownBackend: the requested backend does not exist.
var ErrUnknownBackend = errors.New("unknown backend")

// BackendAuto asks kfm to pick a backend by feature probe.
const BackendAuto = "auto"

// preference lists the backends auto tries, best first.
func preference(h bpf.Hook) []string {
	if h == bpf.HookXDP {
		return []string{"dispatcher", "tailcall"}
	}
	return []string{"tcx", "tc", "tailcall"}
}

func (m *Manager) backend(name string) (Backend, error) {
	for _, b := range m.backends {
		if b.Name() == name {
			return b, nil
		}
	}
	var names []string
	for _, b := range m.backends {
		names = append(names, b.Name())
	}
	return nil, fmt.Errorf("%w %q: use auto or one of %s", ErrUnknownBackend, name, strings.Join(names, ", "))
}

// selectBackend picks the backend for a new chain on hook h. It returns the
// backend and the reason shown by kfm status.
func (m *Manager) selectBackend(h bpf.Hook, requested string) (Backend, string, error) {
	if requested != "" && requested != BackendAuto {
		b, err := m.backend(requested)
		if err != nil {
			return nil, "", err
		}
		if err := b.Supports(h); err != nil {
			return nil, "", fmt.Errorf("backend %s cannot chain %s programs here: %w", requested, h, err)
		}
		return b, "requested with --backend " + requested, nil
	}
	var refused []string
	for _, name := range preference(h) {
		b, err := m.backend(name)
		if err != nil {
			continue
		}
		err = m.supports(b, h)
		if err == nil {
			reason := "auto"
			if len(refused) > 0 {
				reason += ": " + strings.Join(refused, "; ")
			}
			return b, reason, nil
		}
		refused = append(refused, fmt.Sprintf("%s unavailable (%v)", name, err))
	}
	return nil, "", fmt.Errorf("no backend can chain %s programs on this kernel: %s: %w", h, strings.Join(refused, "; "), bpf.ErrUnsupportedKernel)
}

// supports caches Backend.Supports for the lifetime of the Manager (one
// command): probes are cheap but not free.
func (m *Manager) supports(b Backend, h bpf.Hook) error {
	key := b.Name() + "/" + string(h)
	if err, ok := m.probed[key]; ok {
		return err
	}
	err := b.Supports(h)
	m.probed[key] = err
	return err
}
