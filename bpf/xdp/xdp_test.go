package xdp_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

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
