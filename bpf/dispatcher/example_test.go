package dispatcher_test

import (
	"context"
	"fmt"
	"log"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/chain"
)

// The dispatcher backend is one of the chain package's backends.
var _ chain.Backend = (*dispatcher.Backend)(nil)

// A dispatcher configuration as libxdp lays it out: version 2 is 124 bytes
// that start with the magic byte and the version.
func ExampleConfig_MarshalBinary() {
	cfg := dispatcher.Config{Version: dispatcher.Version, NumProgs: 2}
	cfg.ChainCallActions[0] = bpf.Actions{bpf.XDPPass}.XDPMask() | 1<<dispatcher.RetVal
	cfg.ChainCallActions[1] = bpf.Actions{bpf.XDPPass, bpf.XDPDrop}.XDPMask() | 1<<dispatcher.RetVal
	cfg.RunPrios[0], cfg.RunPrios[1] = 10, 20
	b, err := cfg.MarshalBinary()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(b), b[:4])

	back, err := dispatcher.ParseConfig(b, 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(back.NumProgs, back.RunPrios[:2], bpf.ActionsFromXDPMask(back.ChainCallActions[1]&^(1<<dispatcher.RetVal)).Names(bpf.HookXDP))
	// Output:
	// 124 [236 2 2 0]
	// 2 [10 20] [drop pass]
}

// Adding a program to whatever chain runs on an interface, xdp-loader's
// programs included: read the chain, keep what runs (Running), add the new
// component in run order, prepare (everything loads and passes the
// verifier), commit (one atomic swap). On bpf.ErrConflict another tool
// changed the chain meanwhile: start over.
func ExampleBackend() {
	ctx := context.Background()
	obj, err := bpf.ReadObject("counter.o")
	if err != nil {
		log.Fatal(err)
	}
	spec, err := obj.Spec(nil)
	if err != nil {
		log.Fatal(err)
	}
	t := bpf.Target{Interface: "eth0", Ifindex: 2, Hook: bpf.HookXDP, BPFFS: "/sys/fs/bpf"}
	b := dispatcher.New(nil)

	cur, err := b.Current(ctx, t)
	if err != nil {
		log.Fatal(err)
	}
	desired := []bpf.Component{{
		Name: "counter", Priority: 20, ProceedOn: bpf.Actions{bpf.XDPPass},
		Spec: spec, Function: "counter",
	}}
	if cur != nil {
		for _, p := range cur.Programs {
			desired = append(desired, bpf.Component{Name: p.Name, Priority: p.Priority, ProceedOn: p.ProceedOn, Running: p.ID})
		}
	}
	// ... sort desired by priority, then:
	change, err := b.Prepare(ctx, t, desired, bpf.PrepareOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer change.Close()
	if err := change.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	for _, p := range change.Programs() {
		fmt.Println(p.Name, p.Priority, p.ID)
	}
}
