// Command kfm is a package manager for eBPF programs: it publishes programs
// as signed OCI artifacts, pulls and verifies them, and composes them into
// chains on XDP and TC hooks. See README.md.
//
// The command layer is thin: it turns flags into calls of the chain,
// registry, verify and bpf packages and prints their results as text or, with
// -o json, as JSON.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stop()
	os.Exit(code)
}
