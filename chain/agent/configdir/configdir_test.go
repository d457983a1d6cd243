package configdir_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/configdir"
)

const manifest = `version: 1
chains:
  - interface: eth0
    hook: xdp
    programs:
      - name: count
        ref: registry.example.com/net/count:1.0.0
`

func lock(priority string) string {
	return `version: 1
chains:
  - interface: eth0
    hook: xdp
    programs:
      - name: count
        ref: registry.example.com/net/count:1.0.0
        resolved: registry.example.com/net/count:1.0.0
        digest: sha256:1111111111111111111111111111111111111111111111111111111111111111
        object: sha256:2222222222222222222222222222222222222222222222222222222222222222
        signer: {key: "sha256:33"}
        function: xdp_count
        priority: ` + priority + `
        proceedOn: [pass]
`
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	// As editors and kfm do: a temporary file renamed over the old one.
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "kfm.yaml", manifest)
	write(t, dir, "kfm.lock", lock("10"))
	reg := prometheus.NewRegistry()
	metrics := agent.NewMetrics(reg)
	src := configdir.New(dir, nil, metrics)
	if src.Name() != "config:"+dir {
		t.Errorf("Name %q", src.Name())
	}
	updates := make(chan agent.Desired, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- src.Run(ctx, func(d agent.Desired) { updates <- d }) }()
	defer func() { cancel(); <-done }()

	next := func(what string) agent.Desired {
		t.Helper()
		select {
		case d := <-updates:
			return d
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no update", what)
			return agent.Desired{}
		}
	}
	d := next("start")
	if len(d.Chains) != 1 || d.Chains[0].Owner != src.Name() || d.Chains[0].Interfaces.Names[0] != "eth0" ||
		d.Chains[0].Programs[0].Digest == "" || d.Chains[0].Generation != 1 {
		t.Fatalf("at start: %+v", d)
	}

	// A lock that no longer satisfies the manifest is refused and counted;
	// nothing is delivered.
	write(t, dir, "kfm.yaml", strings.Replace(manifest, "programs:", "programs:\n      - name: other\n        ref: registry.example.com/net/other:1\n", 1))
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(metrics.SourceRefusals.WithLabelValues("invalid")) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("a manifest the lock does not satisfy was not refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case d := <-updates:
		t.Fatalf("a refused directory was delivered: %+v", d)
	default:
	}

	// Fixed, and locked anew: delivered.
	write(t, dir, "kfm.yaml", manifest)
	write(t, dir, "kfm.lock", lock("20"))
	d = next("after the change")
	if d.Chains[0].Programs[0].Priority != 20 || d.Chains[0].Generation != 2 {
		t.Errorf("after the change: %+v", d.Chains[0])
	}
	// Touching a file without changing it delivers nothing.
	write(t, dir, "kfm.lock", lock("20"))
	select {
	case d := <-updates:
		t.Errorf("an unchanged lock was delivered again: %+v", d)
	case <-time.After(500 * time.Millisecond):
	}
}

// FuzzLoad: the agent's config directory holds a kfm.yaml and a kfm.lock
// that an operator or a configuration tool writes. Any pair is loaded or
// refused without a panic; a loaded lock names every chain the manifest
// wants and survives its own round trip.
func FuzzLoad(f *testing.F) {
	f.Add(manifest, lock("10"))
	f.Add(manifest, lock("99999999999999999999"))
	f.Add(strings.ReplaceAll(manifest, "eth0", "/eth.*/"), strings.ReplaceAll(lock("1"), "eth0", "/eth.*/"))
	f.Add("version: 1\nchains: []\n", "version: 1\nchains: []\n")
	dir := f.TempDir()
	src := configdir.New(dir, slog.New(slog.DiscardHandler), nil)
	f.Fuzz(func(t *testing.T, man, lk string) {
		write(t, dir, "kfm.yaml", man)
		write(t, dir, "kfm.lock", lk)
		l, err := src.Load()
		if err != nil {
			return
		}
		m, err := chain.LoadManifest(filepath.Join(dir, "kfm.yaml"))
		if err != nil {
			t.Fatalf("loaded, yet the manifest does not load alone: %v", err)
		}
		for _, c := range m.Chains {
			if l.ChainIn(c.NetnsPath(), c.Interface, c.Hook) == nil {
				t.Fatalf("loaded a lock without the chain %s %s", c.Interface, c.Hook)
			}
		}
		out, err := l.Marshal()
		if err != nil {
			t.Fatalf("loaded lock does not marshal: %v", err)
		}
		if _, err := chain.ParseLock("again", strings.NewReader(string(out))); err != nil {
			t.Fatalf("loaded lock does not re-parse: %v\n%s", err, out)
		}
	})
}
