package netns_test

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

func TestPairCarriesTraffic(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := netns.NewPair(t)
	recv := netns.Listen(t, p.B, p.BAddr, 7000)
	send := netns.NewSender(t, p.A)
	if _, err := send.Send(netip.AddrPortFrom(p.BAddr, 7000), 20, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := recv.WaitFor(20, 5*time.Second); got != 20 {
		t.Fatalf("received %d datagrams, want 20", got)
	}
	// B's interface is visible under its index inside B only.
	err := p.B.Do(func() error {
		l, err := netlink.LinkByIndex(p.BIfindex)
		if err != nil {
			return err
		}
		if l.Attrs().Name != p.BIf {
			t.Errorf("ifindex %d is %s in B, want %s", p.BIfindex, l.Attrs().Name, p.BIf)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(p.BIf); err == nil {
		t.Errorf("%s is visible in the test's own namespace", p.BIf)
	}
}

func TestCleanupRemovesNamespaces(t *testing.T) {
	testenv.RequirePrivileged(t)
	var paths []string
	t.Run("inner", func(t *testing.T) {
		p := netns.NewPair(t)
		paths = []string{p.A.Path(), p.B.Path()}
		for _, path := range paths {
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("namespace %s missing during the test: %v", path, err)
			}
		}
	})
	for _, path := range paths {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after the test: %v", path, err)
		}
	}
}

// TestIPNetnsExec checks that other tools (xdp-loader, kfm as a process) can
// enter the namespaces by name.
func TestIPNetnsExec(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := netns.NewPair(t)
	out, err := exec.Command("ip", "netns", "exec", p.B.Name, "ip", "-o", "link", "show", p.BIf).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec: %v: %s", err, out)
	}
	if !strings.Contains(string(out), p.BIf) {
		t.Errorf("ip netns exec %s: %s", p.B.Name, out)
	}
}
