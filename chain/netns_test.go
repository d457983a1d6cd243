package chain_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// TestNetnsDispatcher: dispatcher chains on interfaces with the same
// ifindex in two namespaces keep libxdp's pin layout
// (<bpffs>/xdp/dispatch-IFINDEX-ID, unique by dispatcher ID); deleting one
// interface and pruning removes exactly its dispatcher's directory, the
// kernel frees its dispatcher and program, and the other namespace's chain
// runs on. Needs freplace: runs in the kernel VMs (suite chain).
func TestNetnsDispatcher(t *testing.T) {
	testenv.RequireEXT(t)
	bpffs, stateDir, confDir := testenv.BPFFS(t), t.TempDir(), t.TempDir()
	obj, err := programs.Object("xdp_count")
	if err != nil {
		t.Fatal(err)
	}
	objPath := filepath.Join(t.TempDir(), "xdp_count.o")
	if err := os.WriteFile(objPath, obj, 0o644); err != nil {
		t.Fatal(err)
	}
	manager := func() *chain.Manager {
		m, err := chain.New(chain.Options{BPFFS: bpffs, StateDir: stateDir, ConfigDir: confDir,
			Backends: []chain.Backend{dispatcher.New(nil), tailcall.New()}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ctx := context.Background()
	p1, p2 := netns.NewPair(t), netns.NewPair(t)
	if p1.BIfindex != p2.BIfindex {
		t.Fatalf("ifindexes %d and %d; the test needs equal ones", p1.BIfindex, p2.BIfindex)
	}
	var roots []ebpf.ProgramID
	var progs []ebpf.ProgramID
	for _, p := range []*netns.Pair{p1, p2} {
		hs, err := manager().Install(ctx, chain.InstallRequest{Netns: p.B.Name, Interface: p.BIf, Source: objPath, Name: "count", Backend: "dispatcher", Mode: "skb"})
		if err != nil {
			t.Fatal(err)
		}
		if hs.Backend != "dispatcher" || len(hs.Programs) != 1 || hs.RootID == 0 {
			t.Fatalf("install in %s: %+v", p.B.Name, hs)
		}
		if got := attachedXDP(t, p.B, p.BIf); got != uint32(hs.RootID) {
			t.Errorf("XDP program on %s: %d, want the dispatcher %d", p.BIf, got, hs.RootID)
		}
		roots = append(roots, hs.RootID)
		progs = append(progs, hs.Programs[0].ProgramID)
	}
	dir1 := dispatcher.PinDir(bpffs, p1.BIfindex, roots[0])
	dir2 := dispatcher.PinDir(bpffs, p2.BIfindex, roots[1])
	for _, d := range []string{dir1, dir2} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("libxdp pin directory: %v", err)
		}
	}

	if err := p1.B.Do(func() error {
		l, err := netlink.LinkByName(p1.BIf)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Fatal(err)
	}
	pruned, err := manager().Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pruned) != 1 || pruned[0].Netns != p1.B.Path() {
		t.Fatalf("Prune: %+v", pruned)
	}
	if _, err := os.Stat(dir1); !os.IsNotExist(err) {
		t.Errorf("%s after prune: %v", dir1, err)
	}
	if _, err := os.Stat(dir2); err != nil {
		t.Errorf("the other namespace's %s: %v", dir2, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range []ebpf.ProgramID{roots[0], progs[0]} {
		for {
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				break
			}
			p.Close()
			if time.Now().After(deadline) {
				t.Errorf("program %d still loaded after its interface was deleted and pruned", id)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	st, err := manager().StatusIn(ctx, p2.B.Name, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].RootID != roots[1] || st[0].Programs[0].Origin != chain.OriginKFM {
		t.Errorf("the other namespace after prune: %+v", st)
	}
}

func attachedXDP(t *testing.T, ns *netns.Namespace, iface string) uint32 {
	t.Helper()
	var id uint32
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil {
			id = x.ProgId
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// BenchmarkPrune is the cost every kfm command now pays first when nothing
// is to be pruned: the host lock, the host state, the namespace identities,
// one link dump per namespace and a scan of the pin directories. Chains run
// in n namespaces (tailcall backend, which the host allows).
func BenchmarkPrune(b *testing.B) {
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("namespaces=%d", n), func(b *testing.B) {
			testenv.RequirePrivileged(b)
			bpffs, stateDir, confDir := testenv.BPFFS(b), b.TempDir(), b.TempDir()
			obj, err := programs.Object("xdp_count")
			if err != nil {
				b.Fatal(err)
			}
			objPath := filepath.Join(b.TempDir(), "xdp_count.o")
			if err := os.WriteFile(objPath, obj, 0o644); err != nil {
				b.Fatal(err)
			}
			manager := func() *chain.Manager {
				m, err := chain.New(chain.Options{BPFFS: bpffs, StateDir: stateDir, ConfigDir: confDir, Backends: []chain.Backend{tailcall.New()}})
				if err != nil {
					b.Fatal(err)
				}
				return m
			}
			ctx := context.Background()
			for range n {
				p := netns.NewPair(b)
				if _, err := manager().Install(ctx, chain.InstallRequest{Netns: p.B.Name, Interface: p.BIf, Source: objPath, Name: "count", Backend: "tailcall"}); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				pruned, err := manager().Prune(ctx)
				if err != nil || len(pruned) != 0 {
					b.Fatalf("Prune: %+v, %v", pruned, err)
				}
			}
		})
	}
}

// FuzzNetnsPath: what a user writes for a network namespace (--netns, a
// chain's netns: in kfm.yaml or a lock) becomes "", or an absolute, clean
// path that maps to itself again; a name never escapes /run/netns.
func FuzzNetnsPath(f *testing.F) {
	for _, s := range []string{"", "blue", "/run/netns/blue", "/proc/1/ns/net", "../x", "a/b", ".", "..", "//x/../y/", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := chain.NetnsPath(s)
		if err != nil || p == "" {
			if err == nil && s != "" {
				t.Fatalf("%q became the own namespace", s)
			}
			return
		}
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			t.Fatalf("%q -> %q: not an absolute clean path", s, p)
		}
		if !filepath.IsAbs(s) && filepath.Dir(p) != chain.NetnsDir {
			t.Fatalf("name %q -> %q, outside %s", s, p, chain.NetnsDir)
		}
		if again, err := chain.NetnsPath(p); err != nil || again != p {
			t.Fatalf("%q -> %q -> %q, %v", s, p, again, err)
		}
	})
}
