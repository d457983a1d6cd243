package verify

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/sigstoretest"
)

func TestPolicyGlob(t *testing.T) {
	tests := []struct {
		pattern, ref string
		match        bool
	}{
		{"registry.example.com/net/*", "registry.example.com/net/ratelimit:1.2.0", true},
		{"registry.example.com/net/*", "registry.example.com/net/ratelimit@sha256:" + strings.Repeat("ab", 32), true},
		{"registry.example.com/net/*", "registry.example.com/net/sub/ratelimit:1", false},
		{"registry.example.com/net/*", "registry.example.com/netx/ratelimit:1", false},
		{"registry.example.com/net/*", "evil.example.com/registry.example.com/net/x:1", false},
		{"registry.example.com/net/**", "registry.example.com/net/sub/ratelimit:1", true},
		{"registry.example.com/**", "registry.example.com/a/b/c:1", true},
		{"**", "anything.example/x/y:z", true},
		{"127.0.0.1:5000/kfm/*", "127.0.0.1:5000/kfm/xdp-count:1.0.0", true},
		{"127.0.0.1:5000/kfm/*", "127.0.0.1:5001/kfm/xdp-count:1.0.0", false},
		{"registry.example.com/net/rate?imit", "registry.example.com/net/ratelimit:1", true},
		{"registry.example.com/net/rate?imit", "registry.example.com/net/rate/imit:1", false},
		{"registry.example.com/net.x/*", "registry.example.com/netax/y:1", false}, // dots are literal
		{"*.example.com/net/*", "ghcr.example.com/net/x:1", true},
	}
	for _, tt := range tests {
		p := &Policy{Source: "test", Rules: []Rule{{Match: tt.pattern}}}
		r, err := p.Match(tt.ref)
		if got := r != nil; got != tt.match {
			t.Errorf("%q vs %q: match %v (%v), want %v", tt.pattern, tt.ref, got, err, tt.match)
		}
		if !tt.match && !errors.Is(err, ErrUntrusted) {
			t.Errorf("%q vs %q: error %v, want ErrUntrusted", tt.pattern, tt.ref, err)
		}
	}
}

func TestPolicyFirstMatchWins(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := newTestKey(t), newTestKey(t)
	pem2, _ := os.ReadFile(k2.pubPath)
	copyFile(t, k1.pubPath, filepath.Join(dir, "keys", "net.pub"))
	policy := writeFile(t, filepath.Join(dir, "policy.yaml"), `version: 1
rules:
  - match: registry.example.com/net/experimental/**
    deny: true
  - match: registry.example.com/net/**
    keys:
      - keys/net.pub
  - match: registry.example.com/**
    keys:
      - |
`+indent(string(pem2), "        ")+`
`)
	p, err := LoadPolicy(context.Background(), policy)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ref  string
		line int
		deny bool
		key  string
	}{
		{"registry.example.com/net/experimental/x:1", 3, true, ""},
		{"registry.example.com/net/ratelimit:1", 5, false, k1.pub.Fingerprint},
		{"registry.example.com/lb/maglev:1", 8, false, k2.pub.Fingerprint},
	} {
		r, err := p.Match(tt.ref)
		if err != nil {
			t.Fatalf("%s: %v", tt.ref, err)
		}
		if r.Line != tt.line || r.Deny != tt.deny || (tt.key != "" && r.Keys[0].Fingerprint != tt.key) {
			t.Errorf("%s: rule at line %d (deny %v), want line %d (deny %v, key %s)", tt.ref, r.Line, r.Deny, tt.line, tt.deny, tt.key)
		}
	}
	if _, err := p.Match("ghcr.io/other/x:1"); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), policy) {
		t.Errorf("no rule: %v", err)
	}
}

// A malformed policy is refused with an error that names the file and line.
func TestPolicyMalformed(t *testing.T) {
	dir := t.TempDir()
	key := newTestKey(t)
	copyFile(t, key.pubPath, filepath.Join(dir, "k.pub"))
	vs := sigstoretest.New(t)
	copyFile(t, vs.WriteTrustedRoot(t, vs), filepath.Join(dir, "trusted_root.json"))
	writeFile(t, filepath.Join(dir, "bad.json"), `{"mediaType":"nonsense"}`)

	tests := []struct {
		name, yaml string
		line       int
		reason     string
	}{
		{"empty", "  \n", 0, "empty file"},
		{"not yaml", "version: 1\nrules: [\n", 2, "did not find expected"},
		{"wrong version", "version: 2\nrules:\n  - match: '**'\n    keys: [k.pub]\n", 1, "version 2"},
		{"no version", "rules:\n  - match: '**'\n    keys: [k.pub]\n", 1, "version 0"},
		{"no rules", "version: 1\nrules: []\n", 2, "no rules"},
		{"unknown field", "version: 1\nrules:\n  - match: '**'\n    keys: [k.pub]\n    trust: everyone\n", 5, `unknown key "trust" (allowed here: match, deny, keys, keyless, capabilities)`},
		{"misspelt keyless field", "version: 1\nrules:\n  - match: '**'\n    keyless:\n      trustedroot: trusted_root.json\n", 5, `unknown key "trustedroot": did you mean "trustedRoot"?`},
		{"rule accepting nothing", "version: 1\nrules:\n  - match: '**'\n  - match: x.io/y\n    keys: [k.pub]\n", 3, "accepts nothing"},
		{"tag in pattern", "version: 1\nrules:\n  - match: registry.example.com/net/x:1.0\n    keys: [k.pub]\n", 3, "not tags"},
		{"digest in pattern", "version: 1\nrules:\n  - match: registry.example.com/net/x@sha256:00\n    keys: [k.pub]\n", 3, "no digests"},
		{"missing key file", "version: 1\nrules:\n  - match: '**'\n    keys:\n      - k.pub\n      - missing.pub\n", 6, "missing.pub"},
		{"not a key", "version: 1\nrules:\n  - match: '**'\n    keys:\n      - |\n        -----BEGIN PUBLIC KEY-----\n        bm90IGEga2V5\n        -----END PUBLIC KEY-----\n", 5, "not a PEM public key"},
		{"deny with keys", "version: 1\nrules:\n  - match: '**'\n    deny: true\n    keys: [k.pub]\n", 3, "deny: true takes no keys"},
		{"keyless without trusted root", "version: 1\nrules:\n  - match: '**'\n    keyless:\n      identities:\n        - {issuer: i, subject: s}\n", 5, "needs trustedRoot"},
		{"keyless trusted root missing", "version: 1\nrules:\n  - match: '**'\n    keyless:\n      trustedRoot: nowhere.json\n      identities:\n        - {issuer: i, subject: s}\n", 5, "nowhere.json"},
		{"keyless trusted root not one", "version: 1\nrules:\n  - match: '**'\n    keyless:\n      trustedRoot: bad.json\n      identities:\n        - {issuer: i, subject: s}\n", 5, "not a sigstore trusted root"},
		{"keyless without identities", "version: 1\nrules:\n  - match: '**'\n    keyless:\n      trustedRoot: trusted_root.json\n", 5, "needs identities"},
		{"identity with subject and regexp", "version: 1\nrules:\n  - match: '**'\n    keyless:\n      trustedRoot: trusted_root.json\n      identities:\n        - {issuer: i, subject: s}\n        - {issuer: i, subject: s, subjectRegexp: '.*'}\n", 8, "exactly one of subject and subjectRegexp"},
		{"identity without issuer", "version: 1\nrules:\n  - match: '**'\n    keyless:\n      trustedRoot: trusted_root.json\n      identities:\n        - subject: s\n", 7, "exactly one of issuer and issuerRegexp"},
		{"bad regexp", "version: 1\nrules:\n  - match: '**'\n    keyless:\n      trustedRoot: trusted_root.json\n      identities:\n        - {issuer: i, subjectRegexp: '(unclosed'}\n", 7, "missing closing )"},
		{"keys not a list", "version: 1\nrules:\n  - match: '**'\n    keys: k.pub\n", 4, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(dir, "policy.yaml"), tt.yaml)
			_, err := LoadPolicy(context.Background(), path)
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("got %v, want ErrPolicy", err)
			}
			where := path + ":"
			if tt.line > 0 {
				where = path + ":" + strconv.Itoa(tt.line) + ":"
			}
			if !strings.HasPrefix(err.Error(), where) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("error %q: want it to start with %q and say %q", err, where, tt.reason)
			}
		})
	}
}

func TestPolicyKeylessFromFile(t *testing.T) {
	dir := t.TempDir()
	vs := sigstoretest.New(t)
	copyFile(t, vs.WriteTrustedRoot(t, vs), filepath.Join(dir, "roots", "trusted_root.json"))
	path := writeFile(t, filepath.Join(dir, "policy.yaml"), `version: 1
rules:
  - match: registry.example.com/**
    keyless:
      trustedRoot: roots/trusted_root.json
      identities:
        - issuer: https://token.actions.githubusercontent.com
          subject: https://github.com/example/net/.github/workflows/release.yml@refs/heads/main
        - issuerRegexp: ^https://accounts\.google\.com$
          subjectRegexp: ^[a-z]+@example\.com$
`)
	p, err := LoadPolicy(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Match("registry.example.com/net/x:1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Keyless == nil || len(r.Keyless.Identities) != 2 || r.Keyless.TrustedRootPath != filepath.Join(dir, "roots", "trusted_root.json") {
		t.Fatalf("keyless part: %+v", r.Keyless)
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("version: 1\nrules:\n  - match: registry.example.com/net/*\n    deny: true\n"))
	f.Add([]byte("version: 1\nrules:\n  - match: '**'\n    keys: [k.pub]\n"))
	f.Add([]byte("version: 1\nrules:\n  - match: '**'\n    keyless:\n      trustedRoot: t.json\n      identities:\n        - {issuer: i, subjectRegexp: '^a+$'}\n"))
	f.Add([]byte("version: 1\nrules: [{match: 'a/**?*', deny: true}, {match: '*', deny: true}]\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(context.Background(), "policy.yaml", data, dir)
		if err != nil {
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("error %v does not wrap ErrPolicy", err)
			}
			return
		}
		for _, ref := range []string{"registry.example.com/net/x:1", "a/b:c", "127.0.0.1:5000/x@sha256:" + strings.Repeat("0", 64)} {
			r, err := p.Match(ref)
			if (r == nil) == (err == nil) {
				t.Fatalf("Match(%q): rule %v and error %v", ref, r, err)
			}
		}
	})
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}
