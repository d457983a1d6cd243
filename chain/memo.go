package chain

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/analyze"
	"github.com/kfm-project/kfm/registry"
)

// memo remembers, for the lifetime of one Sources (one kfm command), what
// was learnt per digest, so that cost follows the number of distinct
// programs and not the number of chains: a bundle is fetched, verified and
// opened once per digest and signer asked for, and an object's ELF is
// parsed once per content (a parsed bpf.Object is read-only; every chain
// gets its own CollectionSpec copy from it, and only when it loads). Errors
// are not remembered. The zero value is ready to use.
type memo struct {
	mu      sync.Mutex
	pulls   map[string]*pulled
	opens   map[string]*registry.Bundle
	objects map[string]*bpf.Object
	caps    map[string]*analyze.Capabilities
}

func (m *memo) pulled(key string, f func() (*pulled, error)) (*pulled, error) {
	return remember(m, &m.pulls, key, f)
}

func (m *memo) opened(key string, f func() (*registry.Bundle, error)) (*registry.Bundle, error) {
	return remember(m, &m.opens, key, f)
}

// object parses data (named source in errors) once per content.
func (m *memo) object(source string, data []byte) (*bpf.Object, error) {
	sum := sha256.Sum256(data)
	return remember(m, &m.objects, hex.EncodeToString(sum[:]), func() (*bpf.Object, error) { return bpf.ParseObject(source, data) })
}

// capabilities analyses function of obj once per object content and
// function (the analysis reads the bytecode only; the policy's verdict on
// it is asked each time, by reference and hook).
func (m *memo) capabilities(obj *bpf.Object, function string) (*analyze.Capabilities, error) {
	return remember(m, &m.caps, obj.SHA256+"\x00"+function, func() (*analyze.Capabilities, error) {
		spec, err := obj.Spec(nil)
		if err != nil {
			return nil, err
		}
		return analyze.Program(spec, function)
	})
}

func remember[V any](m *memo, table *map[string]V, key string, f func() (V, error)) (V, error) {
	m.mu.Lock()
	v, ok := (*table)[key]
	m.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := f()
	if err != nil {
		return v, err
	}
	m.mu.Lock()
	if *table == nil {
		*table = map[string]V{}
	}
	(*table)[key] = v
	m.mu.Unlock()
	return v, nil
}

// signerKey names what a pull asked of the signer, for the memo.
func signerKey(s *Signer) string {
	if s == nil {
		return "policy"
	}
	if s.Unsigned {
		return "unsigned"
	}
	return s.Key + "\x00" + s.Subject + "\x00" + s.Issuer
}
