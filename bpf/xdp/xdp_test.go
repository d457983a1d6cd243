package xdp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf/xdp"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

func loadXDP(t *testing.T, verdict int32) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, verdict), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func TestReplace(t *testing.T) {
	testenv.RequirePrivileged(t)
	pair := netns.NewPair(t)
	a, b, c := loadXDP(t, 2), loadXDP(t, 2), loadXDP(t, 1)
	for _, mode := range []xdp.Mode{xdp.ModeNative, xdp.ModeSKB} {
		t.Run(string(mode), func(t *testing.T) {
			err := pair.B.Do(func() error {
				idx := pair.BIfindex
				if err := xdp.Replace(idx, a, nil, mode); err != nil {
					return err
				}
				got, err := xdp.Query(idx)
				if err != nil {
					return err
				}
				if got.ProgramID != progID(t, a) || got.Mode != mode {
					t.Errorf("attached %+v, want program %d in %s mode", got, progID(t, a), mode)
				}
				if err := xdp.Replace(idx, b, nil, mode); !errors.Is(err, xdp.ErrOccupied) {
					t.Errorf("attach without expected onto an occupied hook: %v, want ErrOccupied", err)
				}
				if err := xdp.Replace(idx, c, b, mode); !errors.Is(err, xdp.ErrChanged) {
					t.Errorf("replace with the wrong expected program: %v, want ErrChanged", err)
				}
				if err := xdp.Replace(idx, b, a, mode); err != nil {
					return err
				}
				if got, _ := xdp.Query(idx); got.ProgramID != progID(t, b) {
					t.Errorf("after replace: program %d, want %d", got.ProgramID, progID(t, b))
				}
				if err := xdp.Replace(idx, nil, b, mode); err != nil {
					return err
				}
				if got, _ := xdp.Query(idx); got.ProgramID != 0 {
					t.Errorf("after detach: program %d still attached", got.ProgramID)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := pair.B.Do(func() error { return xdp.Replace(pair.BIfindex, a, nil, xdp.ModeOffload) }); !errors.Is(err, xdp.ErrOffload) {
		t.Errorf("offload: %v, want ErrOffload", err)
	}
}

// TestReplaceMTUTooLarge: native XDP of a program without the multi-buffer
// flag on an interface whose frames exceed a page is refused; the error
// carries the kernel's own reason (an extended ack) and says what to do,
// and skb mode works.
func TestReplaceMTUTooLarge(t *testing.T) {
	testenv.RequirePrivileged(t)
	pair := netns.NewPair(t)
	for _, end := range []struct {
		ns    *netns.Namespace
		iface string
	}{{pair.A, pair.AIf}, {pair.B, pair.BIf}} {
		if err := end.ns.Do(func() error {
			l, err := netlink.LinkByName(end.iface)
			if err != nil {
				return err
			}
			return netlink.LinkSetMTU(l, 9000)
		}); err != nil {
			t.Fatal(err)
		}
	}
	p := loadXDP(t, 2)
	err := pair.B.Do(func() error { return xdp.Replace(pair.BIfindex, p, nil, xdp.ModeNative) })
	if !errors.Is(err, unix.ERANGE) || !strings.Contains(err.Error(), "MTU is too large for native XDP") || !strings.Contains(err.Error(), "--mode skb") || !strings.Contains(err.Error(), "veth:") {
		t.Errorf("native attach at MTU 9000: %v, want ERANGE with veth's reason and a hint", err)
	}
	if err := pair.B.Do(func() error {
		if err := xdp.Replace(pair.BIfindex, p, nil, xdp.ModeSKB); err != nil {
			return err
		}
		return xdp.Replace(pair.BIfindex, nil, p, xdp.ModeSKB)
	}); err != nil {
		t.Errorf("skb mode at MTU 9000: %v", err)
	}
}
