package chain_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// TestApplyRemembersPins: an apply that took long enough checks the map pins
// of the elements it made at its end and remembers them
// (<state>/pins-checked.json), so the status that follows does not check
// them again. A pin removed by hand right after that is still found by the
// next status, with real timestamps (none set by hand): the remembered
// check was made more than pinMarkMargin after the directory last changed,
// so the removal changes the directory's time.
func TestApplyRemembersPins(t *testing.T) {
	testenv.RequirePrivileged(t)
	bpffs, stateDir, confDir := testenv.BPFFS(t), t.TempDir(), t.TempDir()
	count := exampleObject(t, "xdp_count")
	p := netns.NewPair(t)
	manifest := fmt.Sprintf("version: 1\nchains:\n  - interface: %s\n    netns: %s\n    hook: xdp\n    backend: tailcall\n    programs:\n      - {name: count, path: %s}\n", p.BIf, p.B.Name, count)
	if err := os.WriteFile(filepath.Join(confDir, "kfm.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	newManager := func(checkpoint func(string)) *chain.Manager {
		m, err := chain.New(chain.Options{BPFFS: bpffs, StateDir: stateDir, ConfigDir: confDir, Backends: []chain.Backend{tailcall.New()}, Checkpoint: checkpoint})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ctx := context.Background()
	// A large apply takes seconds; this one is made to take as long as
	// the margin after its pins were made.
	slow := func(step string) {
		if step == "state-saved" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if _, err := newManager(slow).Apply(ctx, chain.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var marks struct {
		Marks map[string]json.RawMessage `json:"marks"`
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "pins-checked.json"))
	if err != nil {
		t.Fatalf("the apply remembered no check: %v", err)
	}
	if err := json.Unmarshal(b, &marks); err != nil {
		t.Fatal(err)
	}
	var dir string
	for d := range marks.Marks {
		if filepath.Base(d) == "count" {
			dir = d
		}
	}
	if dir == "" {
		t.Fatalf("pins-checked.json does not name count's directory: %s", b)
	}

	// Remove one of count's map pins by hand, at once, and ask.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var removed string
	for _, e := range entries {
		if e.Name() != "kfm-counters" {
			removed = e.Name()
			break
		}
	}
	if removed == "" {
		t.Fatalf("%s holds no map pin of the program's own", dir)
	}
	if err := os.Remove(filepath.Join(dir, removed)); err != nil {
		t.Fatal(err)
	}
	st, err := newManager(nil).StatusIn(ctx, p.B.Name, p.BIf)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || !strings.Contains(strings.Join(st[0].Drift, "\n"), "map "+removed+" is no longer pinned") {
		t.Errorf("status after removing the pin %s by hand: %+v, want drift naming it", removed, st)
	}
}
