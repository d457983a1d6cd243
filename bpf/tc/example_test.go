package tc_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/tc"
)

// Pick tcx where the kernel has it, classic tc otherwise, as kfm's auto
// selection does.
func ExampleNewTCX() {
	var b *tc.Backend
	if err := tc.NewTCX().Supports(bpf.HookTCIngress); err == nil {
		b = tc.NewTCX()
	} else if errors.Is(err, bpf.ErrUnsupportedKernel) {
		fmt.Println("tcx unavailable:", err)
		b = tc.NewTC()
	} else {
		log.Fatal(err)
	}
	t := bpf.Target{Interface: "eth0", Ifindex: 2, Hook: bpf.HookTCIngress, BPFFS: "/sys/fs/bpf"}
	c, err := b.Current(context.Background(), t)
	if err != nil {
		log.Fatal(err)
	}
	if c != nil {
		for _, p := range c.Programs {
			fmt.Println(p.Name, p.Priority, p.ProceedOn.Names(t.Hook), p.ID)
		}
	}
}
