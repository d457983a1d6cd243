package chain

import (
	"errors"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf"
)

const goodManifest = `version: 1
chains:
  - interface: eth0
    hook: xdp
    backend: auto
    programs:
      - name: ratelimit
        ref: registry.example.com/net/xdp-ratelimit:^1.2
        priority: 10
        params: {rate: 1000, burst: 50}
      - name: count
        path: /opt/ebpf/xdp_count.o
        proceedOn: [pass, drop]
  - interface: eth0
    hook: tc-egress
    programs:
      - name: mark
        ref: registry.example.com/net/tc-mark@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
`

func TestParseManifest(t *testing.T) {
	m, err := ParseManifest("kfm.yaml", strings.NewReader(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	xdp := m.Chain("eth0", bpf.HookXDP)
	if xdp == nil || len(xdp.Programs) != 2 {
		t.Fatalf("xdp chain: %+v", xdp)
	}
	rl := xdp.Programs[0]
	if rl.Params["rate"] != "1000" || *rl.Priority != 10 || rl.Line() != 7 {
		t.Errorf("ratelimit: %+v (line %d)", rl, rl.Line())
	}
	out, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseManifest("again", strings.NewReader(string(out)))
	if err != nil {
		t.Fatalf("marshalled manifest does not parse: %v\n%s", err, out)
	}
	if len(back.Chains) != 2 || back.Chains[0].Hook != bpf.HookTCEgress {
		t.Errorf("round trip: chains %+v (want sorted: tc-egress before xdp)", back.Chains)
	}
}

func TestParseManifestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    prio: 3\n", "kfm.yaml: invalid manifest: line 5: field prio not found"},
		{"unknown program key", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    programs:\n      - name: a\n        path: a.o\n        colour: red\n", "line 8: field colour not found"},
		{"no version", "chains: []\n", "add `version: 1`"},
		{"empty", "\n", "empty file"},
		{"bad hook", "version: 1\nchains:\n  - interface: eth0\n    hook: ingress\n", "kfm.yaml:3: unknown hook \"ingress\""},
		{"both ref and path", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    programs:\n      - name: a\n        path: a.o\n        ref: r/a:1\n", "kfm.yaml:6: program \"a\" needs exactly one of ref and path"},
		{"duplicate name", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    programs:\n      - {name: a, path: a.o}\n      - {name: a, path: b.o}\n", "kfm.yaml:7: a second program named \"a\""},
		{"duplicate chain", "version: 1\nchains:\n  - {interface: eth0, hook: xdp}\n  - {interface: eth0, hook: xdp}\n", "kfm.yaml:4: a second chain for eth0/xdp (the first is on line 3)"},
		{"bad verdict", "version: 1\nchains:\n  - interface: eth0\n    hook: tc-ingress\n    programs:\n      - {name: a, path: a.o, proceedOn: [pass]}\n", "kfm.yaml:6: program \"a\": unknown TC verdict"},
		{"bad backend", "version: 1\nchains:\n  - {interface: eth0, hook: xdp, backend: fast}\n", "unknown backend \"fast\""},
		{"mode on tc", "version: 1\nchains:\n  - {interface: eth0, hook: tc-ingress, mode: skb}\n", "only XDP chains have a mode"},
		{"bad name", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    programs:\n      - {name: a/b, path: a.o}\n", "invalid program name"},
		{"not yaml", "version: 1\nchains: [\n", "kfm.yaml: invalid manifest: line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseManifest("kfm.yaml", strings.NewReader(tc.yaml))
			if err == nil || !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrManifest containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add(goodManifest)
	f.Add("version: 1\nchains: []\n")
	f.Add("version: 1\nchains:\n  - {interface: eth0, hook: xdp, programs: [{name: a, path: a.o}]}\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseManifest("fuzz.yaml", strings.NewReader(s))
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error does not wrap ErrManifest: %v", err)
			}
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseManifest("round-trip", strings.NewReader(string(out))); err != nil {
			t.Fatalf("valid manifest does not survive a round trip: %v\n%s", err, out)
		}
	})
}
