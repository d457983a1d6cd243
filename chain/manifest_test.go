package chain

import (
	"errors"
	"slices"
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
	if len(back.Chains) != 2 || back.Chains[0].Hook != bpf.HookXDP || string(out) != goodManifest {
		t.Errorf("an unchanged manifest must be written back as it was:\n%s", out)
	}
	fresh := &Manifest{Version: ManifestVersion, Chains: m.Chains}
	out, err = fresh.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err = ParseManifest("again", strings.NewReader(string(out)))
	if err != nil || len(back.Chains) != 2 || back.Chains[0].Hook != bpf.HookTCEgress {
		t.Errorf("a new manifest: chains %+v, %v (want sorted: tc-egress before xdp)", back, err)
	}
}

// kfm install and remove edit kfm.yaml in place: the user's comments and
// order stay.
func TestManifestEditKeepsComments(t *testing.T) {
	const text = `# Edge routers: keep this chain short.
version: 1
chains:
  # XDP first.
  - interface: eth0
    hook: xdp
    programs:
      # Limits per source address; see the runbook.
      - name: ratelimit
        ref: registry.example.com/net/xdp-ratelimit:^1.2
        priority: 10 # before everything
        params: {rate: 1000}
      - name: old
        path: /opt/old.o
  - interface: eth1
    hook: tc-egress
    programs:
      - {name: mark, path: /opt/mark.o}
`
	m, err := ParseManifest("kfm.yaml", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	// What install/remove do: change a param, remove a program, add one,
	// drop a chain, add a chain.
	xdp := *m.Chain("eth0", bpf.HookXDP)
	xdp.Programs = slices.Clone(xdp.Programs)
	xdp.Programs[0].Params = map[string]string{"rate": "2000"}
	xdp.Programs = slices.DeleteFunc(xdp.Programs, func(p ProgramSpec) bool { return p.Name == "old" })
	xdp.Programs = append(xdp.Programs, ProgramSpec{Name: "count", Path: "/opt/count.o"})
	m.putChain(xdp)
	m.putChain(ChainSpec{Interface: "eth1", Hook: bpf.HookTCEgress})
	m.putChain(ChainSpec{Interface: "eth2", Hook: bpf.HookXDP, Programs: []ProgramSpec{{Name: "drop", Path: "/opt/drop.o"}}})

	out, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	for _, keep := range []string{"# Edge routers: keep this chain short.", "# XDP first.", "# Limits per source address; see the runbook."} {
		if !strings.Contains(got, keep) {
			t.Errorf("comment %q lost:\n%s", keep, got)
		}
	}
	for _, gone := range []string{"/opt/old.o", "eth1", "rate: 1000"} {
		if strings.Contains(got, gone) {
			t.Errorf("%q should be gone:\n%s", gone, got)
		}
	}
	back, err := ParseManifest("again", strings.NewReader(got))
	if err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	c := back.Chain("eth0", bpf.HookXDP)
	if c == nil || len(c.Programs) != 2 || c.Programs[0].Name != "ratelimit" || c.Programs[0].Params["rate"] != "2000" || c.Programs[1].Name != "count" {
		t.Errorf("edited chain: %+v\n%s", c, got)
	}
	if back.Chain("eth2", bpf.HookXDP) == nil || back.Chain("eth1", bpf.HookTCEgress) != nil {
		t.Errorf("chains after the edit:\n%s", got)
	}
}

func TestParseManifestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    prio: 3\n", `kfm.yaml: invalid manifest: line 5: unknown key "prio" (allowed here: interface, netns, hook, backend, mode, counters, programs)`},
		{"unknown program key", "version: 1\nchains:\n  - interface: eth0\n    hook: xdp\n    programs:\n      - name: a\n        path: a.o\n        colour: red\n", `line 8: unknown key "colour" (allowed here: name, ref, path, function, priority, proceedOn, params, counters)`},
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
		{"duplicate chain in a netns", "version: 1\nchains:\n  - {interface: eth0, netns: blue, hook: xdp}\n  - {interface: eth0, netns: /run/netns/blue, hook: xdp}\n", "kfm.yaml:4: a second chain for /run/netns/blue:eth0/xdp"},
		{"relative netns path", "version: 1\nchains:\n  - {interface: eth0, netns: run/netns/blue, hook: xdp}\n", `network namespace "run/netns/blue": give a name from`},
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

// The same interface and hook in different network namespaces are
// different chains; kfm.yaml and kfm.lock keep them apart.
func TestManifestNetns(t *testing.T) {
	m, err := ParseManifest("kfm.yaml", strings.NewReader(`version: 1
chains:
  - {interface: eth0, hook: xdp, programs: [{name: a, path: /a.o}]}
  - {interface: eth0, netns: blue, hook: xdp, programs: [{name: b, path: /b.o}]}
  - {interface: eth0, netns: /proc/1/ns/net, hook: xdp, programs: [{name: c, path: /c.o}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ netns, want string }{{"", "a"}, {"/run/netns/blue", "b"}, {"/proc/1/ns/net", "c"}} {
		c := m.ChainIn(tc.netns, "eth0", bpf.HookXDP)
		if c == nil || c.Programs[0].Name != tc.want {
			t.Errorf("ChainIn(%q): %+v, want the chain of %s", tc.netns, c, tc.want)
		}
	}
	if c := m.Chain("eth0", bpf.HookXDP); c == nil || c.Programs[0].Name != "a" {
		t.Errorf("Chain (host): %+v", c)
	}
	m.putChain(ChainSpec{Interface: "eth0", Netns: "/run/netns/blue", Hook: bpf.HookXDP})
	out, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseManifest("again", strings.NewReader(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if back.ChainIn("/run/netns/blue", "eth0", bpf.HookXDP) != nil || back.Chain("eth0", bpf.HookXDP) == nil || back.ChainIn("/proc/1/ns/net", "eth0", bpf.HookXDP) == nil {
		t.Errorf("removing the blue chain:\n%s", out)
	}
}

func TestNetnsPath(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"blue", "/run/netns/blue", ""},
		{"/run/netns/blue", "/run/netns/blue", ""},
		{"/proc/42/ns/net/", "/proc/42/ns/net", ""},
		{"a/b", "", "give a name"},
		{"..", "", "give a name"},
	} {
		got, err := NetnsPath(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("NetnsPath(%q): %q, %v; want an error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NetnsPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
