package main

import "github.com/spf13/cobra"

// chainSetFlags are kfm lock's flags that write the lock as a Kubernetes
// ChainSet. Both builds have them, so that help reads the same; check and
// write are the complete CLI's (chainset.go), kfm-core's refuse (core.go).
type chainSetFlags struct {
	name         string
	nodeSelector string
}

func (f *chainSetFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "chainset", "", "print the locked chains as a Kubernetes ChainSet of this name (YAML; JSON with -o json) instead of a summary, for kubectl apply -f -")
	fl.StringVar(&f.nodeSelector, "node-selector", "", "with --chainset: the nodes it selects, as a label selector (role=edge,zone in (a,b)); default every node")
}
