//go:build kfm_core

package main

import (
	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/chain"
)

// fullCommands: kfm-core has none of the complete CLI's own commands (see
// full.go).
func fullCommands(*globals) []*cobra.Command { return nil }

// check refuses --chainset and --node-selector: they are the complete
// CLI's (the launcher runs kfm-full for any command line that has them).
func (f *chainSetFlags) check() error {
	if f.name != "" || f.nodeSelector != "" {
		return usageErrorf("--chainset and --node-selector are the complete kfm CLI's: run this through the kfm launcher (bin/kfm), which runs kfm-full for them")
	}
	return nil
}

func (f *chainSetFlags) write(*globals, *chain.Lock) error { return f.check() }
