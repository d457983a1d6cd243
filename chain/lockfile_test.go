package chain

import (
	"errors"
	"strings"
	"testing"
)

func testLock() *Lock {
	return &Lock{Version: LockVersion, Chains: []LockedChain{
		{Interface: "eth0", Hook: "xdp", Backend: "auto", Programs: []LockedProgram{
			{Name: "count", Path: "/opt/ebpf/xdp_count.o", Object: "sha256:bb", Function: "xdp_count", Priority: 50, ProceedOn: []string{"drop", "pass"}},
			{Name: "ratelimit", Ref: "registry.example.com/net/xdp-ratelimit:^1.2", Resolved: "registry.example.com/net/xdp-ratelimit:1.2.3",
				Digest: "sha256:aa", Object: "sha256:cc", Signer: &Signer{Key: "sha256:ff"}, Function: "xdp_ratelimit", Priority: 10,
				ProceedOn: []string{"pass"}, Params: map[string]string{"rate": "1000", "burst": "50"}},
		}},
		{Interface: "eth0", Hook: "tc-egress", Programs: []LockedProgram{
			{Name: "mark", Ref: "registry.example.com/net/tc-mark@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Object: "sha256:dd",
				Signer: &Signer{Subject: "ci@example.com", Issuer: "https://issuer.example.com"}, Function: "tc_mark", Priority: 50, ProceedOn: []string{"ok"}},
		}},
	}}
}

func TestLockStableAndSatisfies(t *testing.T) {
	l := testLock()
	a, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseLock("kfm.lock", strings.NewReader(string(a)))
	if err != nil {
		t.Fatalf("%v\n%s", err, a)
	}
	b, _ := back.Marshal()
	if string(a) != string(b) {
		t.Errorf("lock is not stable across a round trip:\n%s\n---\n%s", a, b)
	}
	// Sorted: tc-egress before xdp; ratelimit (priority 10) before count.
	if back.Chains[0].Hook != "tc-egress" || back.Chains[1].Programs[0].Name != "ratelimit" {
		t.Errorf("not sorted:\n%s", a)
	}

	m, err := ParseManifest("kfm.yaml", strings.NewReader(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Satisfies(m); err != nil {
		t.Errorf("lock should satisfy the manifest: %v", err)
	}
	m.Chains[0].Programs[0].Params["rate"] = "2000"
	if err := back.Satisfies(m); !errors.Is(err, ErrLockMismatch) || !strings.Contains(err.Error(), "ratelimit: params changed") {
		t.Errorf("changed param: %v", err)
	}
	m.Chains = m.Chains[:1]
	if err := back.Satisfies(m); err == nil || !strings.Contains(err.Error(), "tc-egress is locked but no longer wanted") {
		t.Errorf("removed chain: %v", err)
	}
}

func TestParseLockErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"newer", "version: 2\nchains: []\n", "run kfm lock"},
		{"unknown key", "version: 1\nchains: []\nextra: 1\n", `line 3: unknown key "extra" (allowed here: version, chains)`},
		{"no digest or path", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    programs:\n      - {name: a, object: 'sha256:aa', function: f, priority: 1, proceedOn: [pass]}\n", "exactly one of digest and path"},
		{"bad object", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    programs:\n      - {name: a, path: a.o, object: 'md5:aa', function: f, priority: 1, proceedOn: [pass]}\n", "object must be sha256"},
	} {
		_, err := ParseLock("kfm.lock", strings.NewReader(tc.yaml))
		if err == nil || !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseLock(f *testing.F) {
	good, _ := testLock().Marshal()
	f.Add(string(good))
	f.Add("version: 1\nchains: []\n")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLock("fuzz.lock", strings.NewReader(s))
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error does not wrap ErrManifest: %v", err)
			}
			return
		}
		out, err := l.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseLock("again", strings.NewReader(string(out))); err != nil {
			t.Fatalf("valid lock does not survive a round trip: %v\n%s", err, out)
		}
	})
}
