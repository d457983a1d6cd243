package chain_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testprogs"
)

// TestApplyParallel: an apply that changes more hooks than it loads at once
// (hooks prepare in parallel, see prepareAll) is still one transaction. A
// verifier failure in one chain leaves every chain running as it was (the
// same program IDs, the same pins) and names the program; the same change without it switches
// every chain.
func TestApplyParallel(t *testing.T) {
	testenv.RequirePrivileged(t)
	bpffs, stateDir, confDir, objDir := testenv.BPFFS(t), t.TempDir(), t.TempDir(), t.TempDir()
	write := func(name string, obj []byte, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(objDir, name+".o")
		if err := os.WriteFile(path, obj, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	countObj, err := programs.Object("xdp_count")
	count := write("count", countObj, err)
	passObj, err := testprogs.Object("xdp_pass")
	pass := write("pass", passObj, err)
	badObj, err := testprogs.Object("xdp_verifier_fail")
	bad := write("bad", badObj, err)

	// Six interfaces in one namespace: more hooks than workers on any
	// machine with fewer than six CPUs.
	p := netns.NewPair(t)
	ifaces := []string{p.BIf}
	if err := p.B.Do(func() error {
		for i := range 5 {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("par%d", i)}, PeerName: fmt.Sprintf("pbr%d", i)}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			for _, name := range []string{veth.Name, veth.PeerName} {
				l, err := netlink.LinkByName(name)
				if err != nil {
					return err
				}
				if err := netlink.LinkSetUp(l); err != nil {
					return err
				}
			}
			ifaces = append(ifaces, veth.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// manifest chains count and pass on every interface (pass first when
	// reversed) and, on ifaces[badAt] (unless -1), the program the
	// verifier refuses.
	manifest := func(reversed bool, badAt int) {
		var s strings.Builder
		s.WriteString("version: 1\nchains:\n")
		for i, ifc := range ifaces {
			cp, pp := 10, 20
			if reversed {
				cp, pp = 20, 10
			}
			fmt.Fprintf(&s, "  - interface: %s\n    netns: %s\n    hook: xdp\n    backend: tailcall\n    programs:\n", ifc, p.B.Name)
			fmt.Fprintf(&s, "      - {name: count, path: %s, priority: %d}\n      - {name: pass, path: %s, priority: %d}\n", count, cp, pass, pp)
			if i == badAt {
				fmt.Fprintf(&s, "      - {name: bad, path: %s, priority: 30}\n", bad)
			}
		}
		if err := os.WriteFile(filepath.Join(confDir, "kfm.yaml"), []byte(s.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	apply := func() (*chain.ApplyResult, error) {
		m, err := chain.New(chain.Options{BPFFS: bpffs, StateDir: stateDir, ConfigDir: confDir, Backends: []chain.Backend{tailcall.New()}})
		if err != nil {
			t.Fatal(err)
		}
		return m.Apply(ctx, chain.ApplyOptions{})
	}
	// running is every interface's chain: program names and IDs, in run
	// order.
	running := func() map[string][]string {
		t.Helper()
		m, err := chain.New(chain.Options{BPFFS: bpffs, StateDir: stateDir, ConfigDir: confDir, Backends: []chain.Backend{tailcall.New()}})
		if err != nil {
			t.Fatal(err)
		}
		st, err := m.StatusIn(ctx, p.B.Name, "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for _, hs := range st {
			for _, ps := range hs.Programs {
				out[hs.Interface] = append(out[hs.Interface], fmt.Sprintf("%s#%d", ps.Name, ps.ProgramID))
			}
		}
		return out
	}
	manifest(false, -1)
	if _, err := apply(); err != nil {
		t.Fatal(err)
	}
	before, pins := running(), pinTree(t, bpffs)
	if len(before) != len(ifaces) {
		t.Fatalf("chains after the first apply: %v", before)
	}
	for ifc, progs := range before {
		if len(progs) != 2 || !strings.HasPrefix(progs[0], "count#") || !strings.HasPrefix(progs[1], "pass#") {
			t.Fatalf("%s runs %v, want count then pass", ifc, progs)
		}
	}

	// Every chain changes, the fourth cannot load.
	manifest(true, 3)
	_, err = apply()
	if !errors.Is(err, bpf.ErrLoad) || !strings.Contains(err.Error(), ifaces[3]) || !strings.Contains(err.Error(), "bad") || !strings.Contains(err.Error(), "verifier log") {
		t.Fatalf("apply with a program the verifier refuses: %v", err)
	}
	if after := running(); !maps.EqualFunc(after, before, slices.Equal) {
		t.Errorf("chains after the failed apply:\n  %v\nbefore:\n  %v", after, before)
	}
	if after := pinTree(t, bpffs); !slices.Equal(after, pins) {
		t.Errorf("pins after the failed apply:\n  %s\nbefore:\n  %s", strings.Join(after, "\n  "), strings.Join(pins, "\n  "))
	}
	manifest(true, -1)
	res, err := apply()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != len(ifaces) {
		t.Errorf("changes: %+v, want one per interface", res.Changes)
	}
	after := running()
	for _, ifc := range ifaces {
		progs := after[ifc]
		if len(progs) != 2 || !strings.HasPrefix(progs[0], "pass#") || !strings.HasPrefix(progs[1], "count#") {
			t.Errorf("%s runs %v, want pass then count", ifc, progs)
			continue
		}
		for _, prog := range progs {
			if slices.Contains(before[ifc], prog) {
				t.Errorf("%s still runs %s of the first apply", ifc, prog)
			}
		}
	}
}

// pinTree lists every path under bpffs, sorted.
func pinTree(t *testing.T, bpffs string) []string {
	t.Helper()
	var out []string
	if err := filepath.WalkDir(bpffs, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(bpffs, path)
		out = append(out, rel)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
