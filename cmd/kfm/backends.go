package main

import (
	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/bpf/tc"
	"github.com/kfm-project/kfm/chain"
)

// backends lists every backend kfm can use; chain picks among them per hook
// (auto: dispatcher, else tailcall for XDP; tcx, else tc for TC).
func backends(bpffs string) []chain.Backend {
	return []chain.Backend{
		dispatcher.New(nil),
		tailcall.New(),
		tc.NewTCX(),
		tc.NewTC(),
	}
}
