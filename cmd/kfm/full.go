//go:build !kfm_core

package main

import "github.com/spf13/cobra"

// The complete CLI (what `go build ./cmd/kfm` makes; bin/kfm-full of make
// build, the image's /usr/bin/kfm) has every command. Built with the tag
// kfm_core (bin/kfm-core) it leaves out the commands that link client-go,
// controller-runtime and the catalog's Markdown renderer: the agent, the
// catalog commands and kfm lock --chainset. Those libraries are half of the
// binary, and their package initialisers and the pages they touch cost
// every command about 20 MiB of resident memory and 20 ms of start-up. The
// launcher (bin/kfm, see launcher/main.go) runs kfm-full for those command
// lines and kfm-core for all others.

// fullCommands are the commands only the complete CLI has.
func fullCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newAgentCommand(g), newCatalogCommand(g)}
}
