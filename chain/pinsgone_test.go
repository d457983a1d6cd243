package chain_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// TestDispatcherPinsGone: the pins of a dispatcher chain (libxdp's
// <bpffs>/xdp and kfm's <bpffs>/kfm) are removed, as when the bpffs is
// unmounted between runs. The dispatcher stays attached (netlink holds
// it); status says that kfm's pins are gone and how to repair, and apply
// --locked replaces the orphaned dispatcher with a new chain. Needs
// freplace: runs in the kernel VMs (suite chain).
func TestDispatcherPinsGone(t *testing.T) {
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
	p := netns.NewPair(t)
	hs, err := manager().Install(ctx, chain.InstallRequest{Netns: p.B.Name, Interface: p.BIf, Source: objPath, Name: "count", Backend: "dispatcher", Mode: "skb"})
	if err != nil {
		t.Fatal(err)
	}
	old := hs.RootID
	for _, d := range []string{"xdp", "kfm"} {
		if err := os.RemoveAll(filepath.Join(bpffs, d)); err != nil {
			t.Fatal(err)
		}
	}
	if got := attachedXDP(t, p.B, p.BIf); got != uint32(old) {
		t.Fatalf("XDP program after the pins went: %d, want the dispatcher %d still attached", got, old)
	}

	st, err := manager().StatusIn(ctx, p.B.Name, p.BIf)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || len(st[0].Drift) == 0 || !strings.Contains(st[0].Drift[0], "still runs here from its root program") ||
		!strings.Contains(st[0].Drift[0], "kfm apply --locked") {
		t.Fatalf("status after the pins went: %+v", st)
	}

	if _, err := manager().Apply(ctx, chain.ApplyOptions{Locked: true}); err != nil {
		t.Fatalf("apply --locked: %v", err)
	}
	st, err = manager().StatusIn(ctx, p.B.Name, p.BIf)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Backend != "dispatcher" || len(st[0].Programs) != 1 || st[0].Programs[0].Origin != chain.OriginKFM ||
		len(st[0].Drift) != 0 || st[0].RootID == old {
		t.Fatalf("status after apply --locked: %+v", st)
	}
	if got := attachedXDP(t, p.B, p.BIf); got != uint32(st[0].RootID) {
		t.Errorf("XDP program after the repair: %d, want the new dispatcher %d", got, st[0].RootID)
	}
	if _, err := os.Stat(dispatcher.PinDir(bpffs, p.BIfindex, st[0].RootID)); err != nil {
		t.Errorf("libxdp pin directory of the new dispatcher: %v", err)
	}

	// And off again: nothing left attached.
	if _, err := manager().RemoveIn(ctx, p.B.Name, p.BIf, "xdp", "count"); err != nil {
		t.Fatal(err)
	}
	if got := attachedXDP(t, p.B, p.BIf); got != 0 {
		t.Errorf("XDP program after removing the chain: %d", got)
	}
}
