package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/registry"
)

func newLogoutCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "logout REGISTRY",
		Short:   "Remove the stored credentials of a registry",
		Example: `  kfm logout registry.example.com`,
		Args:    exactArgs(1, "a registry host"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := registry.NewClient(registry.Options{})
			if err != nil {
				return err
			}
			if err := c.Logout(cmd.Context(), args[0]); err != nil {
				return err
			}
			return g.report(map[string]string{"registry": args[0], "status": "logged out"}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Removed the credentials of %s\n", args[0])
				return err
			})
		},
	}
}
