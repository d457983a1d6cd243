//go:build kfm_core

package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/chain"
)

// fullCommands: kfm-core has none of the complete CLI's own commands (see
// full.go). In their place it has hidden ones that say where they are, for
// a kfm-core run without the launcher or without kfm-full beside it.
func fullCommands(*globals) []*cobra.Command {
	var out []*cobra.Command
	for _, name := range []string{"agent", "catalog"} {
		out = append(out, &cobra.Command{
			Use:                name,
			Hidden:             true,
			DisableFlagParsing: true,
			RunE: func(*cobra.Command, []string) error {
				return fmt.Errorf("kfm %s is %w: install kfm-full beside the kfm launcher (make build does) and run kfm through the launcher (bin/kfm), or run kfm-full itself", name, errFullOnly)
			},
		})
	}
	return out
}

// errFullOnly: the command is the complete CLI's.
var errFullOnly = errors.New("not in kfm-core, the lighter build of kfm's CLI")

// check refuses --chainset and --node-selector: they are the complete
// CLI's (the launcher runs kfm-full for any command line that has them).
func (f *chainSetFlags) check() error {
	if f.name != "" || f.nodeSelector != "" {
		return usageErrorf("--chainset and --node-selector are the complete kfm CLI's: run this through the kfm launcher (bin/kfm), which runs kfm-full for them")
	}
	return nil
}

func (f *chainSetFlags) write(*globals, *chain.Lock) error { return f.check() }
