package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

func newLoginCommand(g *globals) *cobra.Command {
	var (
		rf            registryFlags
		username      string
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login REGISTRY",
		Short: "Store credentials for a registry (in the Docker credential store)",
		Long: `login checks a username and password against REGISTRY and stores them where
docker, oras and helm store theirs ($DOCKER_CONFIG/config.json or
~/.docker/config.json, through its credential helper when one is set up), so
that a login made with any of these tools works for the others.`,
		Example: `  echo "$TOKEN" | kfm login registry.example.com -u ci --password-stdin`,
		Args:    exactArgs(1, "a registry host"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if username == "" {
				return usageErrorf("login: -u/--username is required")
			}
			if !passwordStdin {
				return usageErrorf("login: pass the password on standard input with --password-stdin (passwords on the command line end up in shell history)")
			}
			line, err := bufio.NewReader(g.in).ReadString('\n')
			if err != nil && err != io.EOF {
				return fmt.Errorf("login: reading the password: %w", err)
			}
			password := strings.TrimRight(line, "\r\n")
			if password == "" {
				return usageErrorf("login: empty password on standard input")
			}
			c, err := g.registryClient(cmd.Context(), &rf, false)
			if err != nil {
				return err
			}
			if err := c.Login(cmd.Context(), args[0], username, password); err != nil {
				return registryError(err)
			}
			return g.report(map[string]string{"registry": args[0], "status": "logged in"}, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, "Login Succeeded")
				return err
			})
		},
	}
	rf.add(cmd, false)
	cmd.Flags().StringVarP(&username, "username", "u", "", "user name")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password (or token) from standard input")
	return cmd
}
