package chain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/kfm-project/kfm/bpf"
)

// Element is one program a host wants on a hook.
type Element struct {
	// Name identifies the element on its hook (default: the function).
	Name string
	// Source is what the user named: a file path or a registry reference;
	// Digest the bundle manifest digest for registry installs.
	Source string
	Digest string
	// Object is the program's ELF, Data its bytes.
	Object *bpf.Object
	Data   []byte
	// Function is the entry function in Object.
	Function  string
	Priority  int
	ProceedOn bpf.Actions
	// Params are the parameter values in canonical form (see
	// bpf.Param.Canonical).
	Params map[string]string
	// MinKernel is the minimum kernel the bundle's publisher declared for
	// the function ("" for none or local files); apply refuses to load on
	// an older kernel (bpf/compat).
	MinKernel string

	// NoCounters loads the program without kfm's verdict counters (see
	// package bpf/counters); the zero value counts.
	NoCounters bool

	// Metrics are the maps the publisher declared as metrics (from the
	// bundle config, or X.bundle.yaml beside a local X.o).
	Metrics []Metric
}

// nameOK is the pattern ^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$ without a
// regexp compiled at start-up (every kfm command, even kfm version, would
// pay for it).
func nameOK(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ValidateName checks an element name: letters, digits, '_' and '-', at
// most 63 characters (names become pin directory names).
func ValidateName(name string) error {
	if !nameOK(name) {
		return fmt.Errorf("invalid program name %q: use letters, digits, '_' and '-' (at most 63 characters)", name)
	}
	return nil
}

// key identifies an element's code and parameters.
func (e *Element) key() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", e.Object.SHA256, e.Function)
	for _, k := range slices.Sorted(mapKeys(e.Params)) {
		fmt.Fprintf(h, "%s=%s\x00", k, e.Params[k])
	}
	// The counters are part of the loaded code: switching them reloads.
	if !e.NoCounters {
		fmt.Fprint(h, "\x00counters")
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// canonicalParams validates params against obj and returns them in
// canonical form.
func canonicalParams(obj *bpf.Object, params map[string]string) (map[string]string, error) {
	if len(params) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(params))
	for k, v := range params {
		p, ok := obj.Param(k)
		if !ok {
			// Let SetParams produce the error listing known params.
			if _, err := obj.Spec(map[string]string{k: v}); err != nil {
				return nil, err
			}
		}
		c, err := p.Canonical(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", obj.Name(), err)
		}
		out[k] = c
	}
	return out, nil
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
