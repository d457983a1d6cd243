package tailcall_test

import (
	"context"
	"fmt"
	"log"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/examples/programs"
)

// Install a chain of two sample programs on eth0's XDP hook. The caller (the
// chain layer) normally also passes pinned state maps in Component.Maps.
func ExampleBackend_Prepare() {
	ctx := context.Background()
	b := tailcall.New()
	if err := b.Supports(bpf.HookXDP); err != nil {
		log.Fatal(err)
	}
	t := bpf.Target{Interface: "eth0", Ifindex: 2, Hook: bpf.HookXDP, BPFFS: "/sys/fs/bpf"}
	var chain []bpf.Component
	for i, name := range []string{"xdp_count", "xdp_portfilter"} {
		data, err := programs.Object(name)
		if err != nil {
			log.Fatal(err)
		}
		obj, err := bpf.ParseObject(name, data)
		if err != nil {
			log.Fatal(err)
		}
		spec, err := obj.Spec(nil)
		if err != nil {
			log.Fatal(err)
		}
		chain = append(chain, bpf.Component{
			Name: name, Priority: 10 * (i + 1), ProceedOn: bpf.Actions{bpf.XDPPass},
			Spec: spec, Function: name, Key: obj.SHA256 + "/" + name,
		})
	}
	change, err := b.Prepare(ctx, t, chain, bpf.PrepareOptions{})
	if err != nil {
		log.Fatal(err) // nothing changed on the hook
	}
	defer change.Close()
	for _, p := range change.Programs() {
		fmt.Println(p.Name, p.ID)
	}
	if err := change.Commit(ctx); err != nil {
		log.Fatal(err)
	}
}
