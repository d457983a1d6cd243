package main

import (
	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/chain"
)

// backends lists every backend kfm can use, best first per hook.
func backends(bpffs string) []chain.Backend {
	return []chain.Backend{
		dispatcher.New(nil),
	}
}
