package catalog_test

import (
	"errors"
	"testing"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
)

// FuzzParseIndex: an index from a registry never panics; errors wrap
// ErrInvalidBundle; what parses lies inside its namespace.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":1,"namespace":"r.example/net","bundles":[]}`))
	f.Add([]byte(`{"schemaVersion":1,"namespace":"r.example/net","bundles":[{"repository":"r.example/net/x","latest":"1.0.0","descriptor":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"config":{"name":"x"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := catalog.ParseIndex(data)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalidBundle) {
				t.Fatalf("error without ErrInvalidBundle: %v", err)
			}
			return
		}
		for _, b := range idx.Bundles {
			if b.Config == nil || b.Latest == "" {
				t.Fatalf("incomplete bundle accepted: %+v", b)
			}
		}
	})
}
