//go:build kfm_core

package main

import (
	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/chain"
)

// fullCommands: kfm-core has none of the complete CLI's own commands (see
// full.go).
func fullCommands(*globals) []*cobra.Command { return nil }

// chainSetFlags are kfm lock's --chainset flags as kfm-core shows them: the
// same flags, so that help reads the same; using them is the complete
// CLI's job (the launcher runs kfm-full for any command line that has
// them).
type chainSetFlags struct {
	name         string
	nodeSelector string
}

func (f *chainSetFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "chainset", "", "print the locked chains as a Kubernetes ChainSet of this name (YAML; JSON with -o json) instead of a summary, for kubectl apply -f -")
	fl.StringVar(&f.nodeSelector, "node-selector", "", "with --chainset: the nodes it selects, as a label selector (role=edge,zone in (a,b)); default every node")
}

func (f *chainSetFlags) check() error {
	if f.name != "" || f.nodeSelector != "" {
		return usageErrorf("--chainset and --node-selector are the complete kfm CLI's: run this through the kfm launcher (bin/kfm), which runs kfm-full for them")
	}
	return nil
}

func (f *chainSetFlags) write(*globals, *chain.Lock) error { return f.check() }
