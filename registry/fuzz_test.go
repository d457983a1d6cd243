package registry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/registry"
)

// FuzzParseConfig: any config that parses marshals to stable JSON that
// parses to the same bytes again (unknown fields included). Seeds:
// testdata/fuzz/FuzzParseConfig and below.
func FuzzParseConfig(f *testing.F) {
	b, err := registry.Pack(readObject(f), registry.PackOptions{Name: "seed"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b.ConfigJSON())
	f.Add([]byte(`{"name":"x","programs":[{"function":"f","future":[1,2]}],"x-extra":{"deep":null}}`))
	f.Add([]byte(`{"name":"x","programs":[{"function":"f","params":[{"name":"p","default":1e400}]}]}`))
	f.Add([]byte(`{"name":"x","programs":[{"function":"f","metrics":[{"name":"x_drops_total","type":"counter","map":"drops","value":"packets",` +
		`"labels":[{"name":"port","field":"port","x":1}]},{"name":"interface","type":"gauge","map":""}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := registry.ParseConfig(data)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalidBundle) && !errors.Is(err, registry.ErrTooLarge) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		out, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshal of a parsed config: %v", err)
		}
		again, err := registry.ParseConfig(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		out2, err := json.Marshal(again)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
	})
}

// FuzzParseBundleFile: bundle.yaml from outside never panics; errors wrap
// ErrInvalidBundle.
func FuzzParseBundleFile(f *testing.F) {
	f.Add([]byte(testBundleYAML))
	f.Add([]byte("name: x\nprograms:\n  - function: f\n    priority: 99999999999999999999\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("name: x\nreadme: README.md\nhomepage: javascript:x\nprograms:\n  - function: f\n    metrics:\n" +
		"      - {name: x_total, type: counter, map: drops, value: packets, labels: [{name: port, field: port}]}\n      - {name: x_total, type: histogram, map: m}\n"))
	f.Add([]byte("---\nname: a\n---\nname: b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		bf, err := registry.ParseBundleFile(data)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalidBundle) {
				t.Fatalf("error does not wrap ErrInvalidBundle: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, p := range bf.Programs {
			if p.Function == "" || seen[p.Function] {
				t.Fatalf("accepted program %q", p.Function)
			}
			seen[p.Function] = true
		}
	})
}

// FuzzCheckSPDX: any licence string is accepted or refused without a panic.
func FuzzCheckSPDX(f *testing.F) {
	for _, s := range []string{"MIT", "(GPL-2.0-only OR BSD-2-Clause) AND MIT", "GPL-2.0+ WITH X", "((", "DocumentRef-a:LicenseRef-b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { _ = registry.CheckSPDX(s) })
}

// FuzzParseReference: any reference a user, a kfm.yaml or a lockfile
// writes is parsed or refused with ErrInvalidReference; a parsed one
// formats (String) to a reference that parses to the same parts.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"registry.example.com/net/ratelimit:1.0.0",
		"localhost:5000/x",
		"[::1]:5000/a/b@sha256:" + strings.Repeat("ab", 32),
		"ghcr.io/org/x:v1@sha256:" + strings.Repeat("0", 64),
		"org/x", "a.b/c:d/e", "a.b/C", "a.b/x@sha512:" + strings.Repeat("1", 128),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := registry.ParseReference(s)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalidReference) {
				t.Fatalf("refusal does not wrap ErrInvalidReference: %v", err)
			}
			return
		}
		again, err := registry.ParseReference(r.String())
		if err != nil {
			t.Fatalf("%q parsed to %q, which does not parse: %v", s, r.String(), err)
		}
		if again != r {
			t.Fatalf("%q: %#v, re-parsed %#v", s, r, again)
		}
	})
}
