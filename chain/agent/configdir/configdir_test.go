package configdir_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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
