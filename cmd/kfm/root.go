package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/verify"
)

// Exit codes scripts can rely on. They are documented in README.md.
const (
	exitOK = 0
	// exitFailure: the command ran and failed (kernel refused, registry
	// unreachable, bad object...).
	exitFailure = 1
	// exitTrust (3): a signature or the trust policy refused a program
	// (unsigned, untrusted signer, invalid signature, tampered content, no
	// policy, a locked signer that no longer signs). kfm verify uses it too.
	exitTrust = 3
	// exitLockMismatch (4): kfm.lock does not pin what kfm.yaml asks for, or
	// a locked object changed (apply --locked).
	exitLockMismatch = 4
	// exitBusy (5): another kfm process held the host lock too long.
	exitBusy = 5
	// exitUsage: the command line itself is wrong (unknown flag, missing
	// argument, invalid value).
	exitUsage = 2
)

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// globals are the flags every command shares.
type globals struct {
	stdio
	output    string // "text" or "json"
	configDir string
	cacheDir  string
	stateDir  string
	bpffs     string
}

// usageError marks errors that are the caller's fault (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newRootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "kfm",
		Short: "Package manager for eBPF programs: publish, verify and chain them on XDP and TC hooks",
		Long: `kfm publishes eBPF programs as signed OCI artifacts, pulls and verifies them,
and composes them into chains on XDP and TC hooks without any chaining code
inside the programs.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch g.output {
			case "text", "json":
				return nil
			default:
				return usageErrorf("invalid --output %q: use text or json", g.output)
			}
		},
	}
	// kfm --version prints the build's version (kfm version says more).
	root.Version = buildVersion()
	root.SetVersionTemplate("kfm {{.Version}}\n")
	root.SetIn(g.in)
	root.SetOut(g.out)
	root.SetErr(g.err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	pf.StringVar(&g.configDir, "config-dir", envOr("KFM_CONFIG_DIR", "/etc/kfm"), "directory of kfm.yaml, kfm.lock and policy.yaml (env KFM_CONFIG_DIR)")
	pf.StringVar(&g.cacheDir, "cache-dir", envOr("KFM_CACHE_DIR", "/var/cache/kfm"), "bundle and signature cache (env KFM_CACHE_DIR)")
	pf.StringVar(&g.stateDir, "state-dir", envOr("KFM_STATE_DIR", "/run/kfm"), "host state (env KFM_STATE_DIR)")
	pf.StringVar(&g.bpffs, "bpffs", envOr("KFM_BPFFS", "/sys/fs/bpf"), "BPF filesystem for pins, mounted if missing (env KFM_BPFFS)")

	root.AddCommand(
		newGenerateKeyPairCommand(g),
		newInspectCommand(g),
		newInstallCommand(g),
		newRemoveCommand(g),
		newSignCommand(g),
		newStatusCommand(g),
		newStatsCommand(g),
		newTopCommand(g),
		newApplyCommand(g),
		newLockCommand(g),
		newUpdateCommand(g),
		newOutdatedCommand(g),
		newPublishCommand(g),
		newPullCommand(g),
		newLoginCommand(g),
		newLogoutCommand(g),
		newVerifyCommand(g),
		newVersionCommand(g),
		newSearchCommand(g),
		newShowCommand(g),
		newMetricsCommand(g),
		newPushLockCommand(g),
	)
	root.AddCommand(fullCommands(g)...)
	return root
}

// run executes kfm with args and returns the process exit status.
func run(ctx context.Context, args []string, io stdio) int {
	g := &globals{stdio: io}
	root := newRootCommand(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(io.err, "kfm: %v\n", err)
	permissionHint(io.err, err)
	return exitCode(err)
}

func exitCode(err error) int {
	var ue usageError
	var coded interface{ ExitCode() int }
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &coded):
		// A command-specific status, documented in its help (kfm verify: 3).
		return coded.ExitCode()
	case errors.Is(err, verify.ErrUnsigned), errors.Is(err, verify.ErrUntrusted),
		errors.Is(err, verify.ErrInvalidSignature), errors.Is(err, verify.ErrContent),
		errors.Is(err, verify.ErrPolicy), errors.Is(err, chain.ErrNoPolicy), errors.Is(err, verify.ErrCapability),
		errors.Is(err, chain.ErrSignerChanged), errors.Is(err, registry.ErrDigestMismatch):
		return exitTrust
	case errors.Is(err, chain.ErrLockMismatch), errors.Is(err, chain.ErrObjectChanged):
		return exitLockMismatch
	case errors.Is(err, chain.ErrLockTimeout):
		return exitBusy
	default:
		return exitFailure
	}
}

// exactArgs is cobra.ExactArgs with a usage error (exit status 2).
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s: expected %s, got %d argument(s)", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// report prints v as JSON under -o json, else calls text.
func (g *globals) report(v any, text func(w io.Writer) error) error {
	if g.output == "json" {
		return printJSON(g.out, v)
	}
	// Buffered: a table goes through tabwriter a cell at a time, which
	// would be a write(2) per cell (thousands for kfm status at 300
	// chains).
	bw := bufio.NewWriter(g.out)
	err := text(bw)
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}
