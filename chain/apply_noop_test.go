package chain_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// TestNoopApplyWritesNothing: the apply after an apply of the same files
// finds the host state and kfm.lock as it would write them (and a lock
// edited by hand is written again as kfm writes it), whether kfm.yaml names
// the XDP mode or leaves it to the default (the first no-op after a new chain used
// to rewrite the state of every hook, a third of its time at 300 chains,
// because the apply recorded no mode and the next read "native" from the
// kernel).
func TestNoopApplyWritesNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := netns.NewPair(t)
	for _, tc := range []struct{ name, mode, hook string }{
		{"xdp default mode", "", "xdp"},
		{"xdp skb mode", "    mode: skb\n", "xdp"},
		{"tc-ingress", "", "tc-ingress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bpffs, stateDir, confDir := testenv.BPFFS(t), t.TempDir(), t.TempDir()
			prog, path := "count", exampleObject(t, "xdp_count")
			if tc.hook != "xdp" {
				path = exampleObject(t, "tc_count")
			}
			manifest := fmt.Sprintf("version: 1\nchains:\n  - interface: %s\n    netns: %s\n    hook: %s\n    backend: tailcall\n%s    programs:\n      - {name: %s, path: %q}\n", p.BIf, p.B.Name, tc.hook, tc.mode, prog, path)
			if err := os.WriteFile(filepath.Join(confDir, "kfm.yaml"), []byte(manifest), 0o644); err != nil {
				t.Fatal(err)
			}
			apply := func() *chain.ApplyResult {
				t.Helper()
				m, err := chain.New(chain.Options{BPFFS: bpffs, StateDir: stateDir, ConfigDir: confDir, Backends: []chain.Backend{tailcall.New()}})
				if err != nil {
					t.Fatal(err)
				}
				res, err := m.Apply(context.Background(), chain.ApplyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			apply()
			t.Cleanup(func() {
				os.WriteFile(filepath.Join(confDir, "kfm.yaml"), []byte("version: 1\nchains: []\n"), 0o644)
				apply()
			})
			statePath, lockPath := filepath.Join(stateDir, "state.json"), filepath.Join(confDir, "kfm.lock")
			read := func(path string) string {
				t.Helper()
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			}
			state, lock := read(statePath), read(lockPath)
			if res := apply(); res.LockChanged {
				t.Errorf("the no-op apply says kfm.lock changed")
			}
			if after := read(statePath); after != state {
				t.Errorf("the no-op apply changed %s:\n%s\nwas:\n%s", statePath, after, state)
			}
			if after := read(lockPath); after != lock {
				t.Errorf("the no-op apply changed kfm.lock:\n%s\nwas:\n%s", after, lock)
			}

			// A lock edited by hand into another layout is written
			// again as kfm writes it.
			if err := os.WriteFile(lockPath, []byte("# a note\n"+lock), 0o644); err != nil {
				t.Fatal(err)
			}
			if res := apply(); !res.LockChanged {
				t.Errorf("apply of a lock edited by hand does not say it rewrote it")
			}
			if after := read(lockPath); after != lock {
				t.Errorf("kfm.lock after apply:\n%s\nwant:\n%s", after, lock)
			}
		})
	}
}

// exampleObject writes the example program name (examples/programs) to a
// file of its own and returns its path.
func exampleObject(t *testing.T, name string) string {
	t.Helper()
	obj, err := programs.Object(name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".o")
	if err := os.WriteFile(path, obj, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
