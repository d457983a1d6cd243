package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/verify"
)

// chainFlags are the flags of commands that read kfm.yaml and change chains.
type chainFlags struct {
	lockTimeout   time.Duration
	allowUnsigned bool
	policy        string
	registry      registryFlags
}

func (f *chainFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.DurationVar(&f.lockTimeout, "lock-timeout", time.Minute, "how long to wait for another kfm process on this host (0: forever)")
	fl.BoolVar(&f.allowUnsigned, "insecure-allow-unsigned", false, "install registry programs whose signatures the trust policy does not accept (a warning is printed every time)")
	fl.StringVar(&f.policy, "policy", "", "trust policy (default <config-dir>/policy.yaml)")
	f.registry.add(cmd, true)
}

// manager builds the chain manager with every backend kfm has. With f nil
// (status), registry programs are not fetched.
func (g *globals) manager(ctx context.Context, f *chainFlags) (*chain.Manager, error) {
	opts := chain.Options{
		BPFFS:     g.bpffs,
		StateDir:  g.stateDir,
		ConfigDir: g.configDir,
		Backends:  backends(g.bpffs),
		Notify:    func(msg string) { fmt.Fprintf(g.err, "kfm: %s\n", msg) },
		// Crash tests only: KFM_TEST_CRASH_AT=<step> kills kfm there.
		Checkpoint: crashAt(os.Getenv("KFM_TEST_CRASH_AT")),
	}
	if f != nil {
		opts.LockTimeout = f.lockTimeout
		src, err := g.sources(ctx, f)
		if err != nil {
			return nil, err
		}
		opts.Sources = src
	}
	return chain.New(opts)
}

// crashAt returns a checkpoint that SIGKILLs the process at step (nil when
// step is empty). Only crash-safety tests set KFM_TEST_CRASH_AT.
func crashAt(step string) func(string) {
	if step == "" {
		return nil
	}
	return func(s string) {
		if s == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}

// sources fetches programs for the chain manager: the registry client with
// the cache, and the trust policy when there is one.
func (g *globals) sources(ctx context.Context, f *chainFlags) (*chain.Sources, error) {
	client, err := g.registryClient(ctx, &f.registry, true)
	if err != nil {
		return nil, err
	}
	src := &chain.Sources{
		Registry:      client,
		AllowUnsigned: f.allowUnsigned,
		Offline:       f.registry.offline,
		BaseDir:       g.configDir,
		PolicyPath:    f.policy,
		Warn:          func(msg string) { fmt.Fprintf(g.err, "kfm: %s\n", msg) },
	}
	if src.PolicyPath == "" {
		src.PolicyPath = filepath.Join(g.configDir, "policy.yaml")
	}
	p, err := verify.LoadPolicy(ctx, src.PolicyPath)
	switch {
	case err == nil:
		src.Policy = p
	case errors.Is(err, fs.ErrNotExist) && f.policy == "":
		// No policy: registry programs are refused unless unsigned ones
		// are allowed (Sources says so when it matters).
	default:
		return nil, err
	}
	return src, nil
}

func newInstallCommand(g *globals) *cobra.Command {
	var (
		f        chainFlags
		req      chain.InstallRequest
		hook     string
		priority int
		params   []string
		counters bool
	)
	cmd := &cobra.Command{
		Use:   "install PATH.o|REF --iface IF",
		Short: "Add a program to the chain on an interface's hook (or replace the one of the same name)",
		Long: `install adds a program to the chain on a hook of an interface, in one atomic
change: the hook runs the old chain until the new one, fully loaded and
verified, replaces it. Installing a name that is already on the hook replaces
that program (new code, priority, proceed-on verdicts or params).

The program is a local object file or a registry reference (host/repo:tag,
host/repo@sha256:..., or host/repo:RANGE with a semver range such as ^1.2).
A registry program must carry a signature that the trust policy
(<config-dir>/policy.yaml) accepts; only --insecure-allow-unsigned skips that,
loudly. install records the program in kfm.yaml and pins it (digest, object
hash, accepted signer) in kfm.lock; if the chain cannot be installed, neither
file changes.

Priority and proceed-on default to the bundle's defaults, else the object's
libxdp XDP_RUN_CONFIG metadata, else 50 and pass (XDP) or ok (TC). Lower
priorities run first.`,
		Example: `  kfm install examples/programs/xdp_count.o --iface eth0
  kfm install registry.example.com/kfm/xdp-ratelimit:^1.0 --iface eth0 --priority 10 --param rate=1000
  kfm install examples/programs/tc_mark.o --iface eth0 --hook tc-egress --param mark=42`,
		Args: exactArgs(1, "one object file or registry reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Interface == "" {
				return usageErrorf("kfm install: --iface is required")
			}
			if hook != "" {
				h, err := bpf.ParseHook(hook)
				if err != nil {
					return usageError{err}
				}
				req.Hook = h
			}
			if cmd.Flags().Changed("priority") {
				req.Priority = &priority
			}
			var err error
			if req.Params, err = parseParams(params); err != nil {
				return err
			}
			req.Source = args[0]
			m, err := g.manager(cmd.Context(), &f)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("counters") {
				req.Counters = &counters
			}
			hs, err := m.Install(cmd.Context(), req)
			if err != nil {
				return err
			}
			return g.report(hs, func(w io.Writer) error { return printHooks(w, []chain.HookStatus{*hs}) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Interface, "iface", "", "network interface (required)")
	fl.StringVar(&req.Netns, "netns", "", netnsUsage)
	fl.StringVar(&hook, "hook", "", "hook: xdp, tc-ingress or tc-egress (default: from the program type)")
	fl.StringVar(&req.Function, "function", "", "entry function (default: the object's only program)")
	fl.StringVar(&req.Name, "name", "", "name of the program in the chain (default: the function name)")
	fl.IntVar(&priority, "priority", 0, "run priority, lower runs first (default: the bundle's, XDP_RUN_CONFIG, else 50)")
	fl.StringVar(&req.ProceedOn, "proceed-on", "", "verdicts on which the packet goes on to the next program, e.g. pass,drop (default: the bundle's, XDP_RUN_CONFIG, else pass / ok)")
	fl.StringArrayVar(&params, "param", nil, "set a parameter (volatile const global): name=value, repeatable")
	fl.StringVar(&req.Mode, "mode", "", "XDP attach mode: native or skb (default: native, or what the chain uses)")
	fl.StringVar(&req.Backend, "backend", "auto", "backend: auto, dispatcher, tailcall, tcx or tc")
	fl.BoolVar(&req.ResetMaps, "reset-maps", false, "allow an upgrade that changes map definitions, starting from empty maps")
	fl.BoolVar(&counters, "counters", true, "count the program's packets per verdict (kfm stats); --counters=false loads it without")
	f.register(cmd)
	return cmd
}

func parseParams(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("--param %q: use name=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func newRemoveCommand(g *globals) *cobra.Command {
	var (
		f     chainFlags
		iface string
		hook  string
		netns string
	)
	cmd := &cobra.Command{
		Use:   "remove NAME --iface IF",
		Short: "Take a program off the chain on an interface (removing the last detaches the chain)",
		Long: `remove takes a program off its chain in one atomic change and out of kfm.yaml
and kfm.lock. Programs another tool (xdp-loader) put into a dispatcher chain
can be removed by their name too. Removing the last program detaches the chain
and removes every pin.`,
		Args: exactArgs(1, "one program name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if iface == "" {
				return usageErrorf("kfm remove: --iface is required")
			}
			var h bpf.Hook
			if hook != "" {
				var err error
				if h, err = bpf.ParseHook(hook); err != nil {
					return usageError{err}
				}
			}
			m, err := g.manager(cmd.Context(), &f)
			if err != nil {
				return err
			}
			hs, err := m.RemoveIn(cmd.Context(), netns, iface, h, args[0])
			if err != nil {
				return err
			}
			if hs == nil {
				hs = &chain.HookStatus{Netns: netns, Interface: iface, Hook: h, Programs: []chain.ProgramStatus{}}
			}
			return g.report(hs, func(w io.Writer) error {
				if len(hs.Programs) == 0 {
					_, err := fmt.Fprintf(w, "%s: removed %s; no chain left on the hook\n", iface, args[0])
					return err
				}
				return printHooks(w, []chain.HookStatus{*hs})
			})
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "", "network interface (required)")
	cmd.Flags().StringVar(&hook, "hook", "", "hook: xdp, tc-ingress or tc-egress (default: wherever NAME runs)")
	cmd.Flags().StringVar(&netns, "netns", "", netnsUsage)
	f.register(cmd)
	return cmd
}

func newStatusCommand(g *globals) *cobra.Command {
	var iface, netns string
	cmd := &cobra.Command{
		Use:   "status [--iface IF] [--netns NAME|PATH]",
		Short: "Show the chains on this host's interfaces in run order, and drift from kfm.lock",
		Long: `status shows every chain on the interfaces of kfm's network namespace and of
every other namespace that kfm.lock or the host state names, in run order, with
the backend, program IDs and drift from kfm.lock. --iface and --netns narrow it
to one interface or one namespace.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager(cmd.Context(), nil)
			if err != nil {
				return err
			}
			hooks, err := m.StatusIn(cmd.Context(), netns, iface)
			if err != nil {
				return err
			}
			return g.report(hooks, func(w io.Writer) error {
				if len(hooks) == 0 {
					_, err := fmt.Fprintln(w, "no chains")
					return err
				}
				return printHooks(w, hooks)
			})
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "", "only this interface")
	cmd.Flags().StringVar(&netns, "netns", "", "show the interfaces of this network namespace: NAME (/run/netns/NAME) or PATH, with the host's bpffs and state")
	return cmd
}

func printHooks(w io.Writer, hooks []chain.HookStatus) error {
	for i, h := range hooks {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if h.Netns != "" {
			fmt.Fprintf(w, "[netns %s] ", h.Netns)
		}
		fmt.Fprintf(w, "%s %s:", h.Interface, h.Hook)
		if h.Backend != "" {
			fmt.Fprintf(w, " backend %s", h.Backend)
		}
		if h.Mode != "" {
			fmt.Fprintf(w, ", mode %s", h.Mode)
		}
		if h.Backend == "dispatcher" {
			fmt.Fprintf(w, ", dispatcher id %d, protocol version %d", h.RootID, h.Version)
		} else if h.RootID != 0 && (h.Backend == "tcx" || h.Backend == "tc") {
			fmt.Fprintf(w, ", gate id %d", h.RootID)
		} else if h.RootID != 0 {
			fmt.Fprintf(w, ", root id %d", h.RootID)
		}
		fmt.Fprintln(w)
		if h.Reason != "" {
			fmt.Fprintf(w, "  why %s: %s\n", h.Backend, h.Reason)
		}
		if len(h.Programs) > 0 {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  POS\tNAME\tPRIORITY\tPROCEED-ON\tID\tTAG\tORIGIN\tSOURCE")
			for _, p := range h.Programs {
				src := p.Source
				if src == "" {
					src = "-"
				}
				fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", p.Position, p.Name, p.Priority, strings.Join(p.ProceedOn, ","), p.ProgramID, p.Tag, p.Origin, src+paramSuffix(p.Params))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		for _, d := range h.Drift {
			fmt.Fprintf(w, "  drift: %s\n", d)
		}
	}
	return nil
}

func paramSuffix(params map[string]string) string {
	if len(params) == 0 {
		return ""
	}
	var kv []string
	for k, v := range params {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return " (" + strings.Join(kv, " ") + ")"
}

func newApplyCommand(g *globals) *cobra.Command {
	var (
		f    chainFlags
		opts chain.ApplyOptions
	)
	cmd := &cobra.Command{
		Use:   "apply [--locked] [--dry-run]",
		Short: "Make the kernel run what kfm.yaml asks for, as kfm.lock pins it",
		Long: `apply makes every hook run the chain kfm.yaml names, with the programs kfm.lock
pins, and empties hooks kfm manages that kfm.yaml no longer names. All programs
of all hooks are pulled, verified and loaded (the verifier has passed them all)
before the first hook switches; a failure while switching rolls the hooks
already switched back. A hook that already runs its chain is left alone (no new
program IDs), so apply can run as often as you like.

Without --locked, apply re-locks first and rewrites kfm.lock when it changed:
tags are resolved again (a moved tag moves the lock), semver ranges keep their
locked version (kfm update moves them), and new or changed programs are
locked. With --locked, apply refuses to run unless kfm.lock
pins exactly what kfm.yaml asks for; it pulls by digest only (a moved tag
changes nothing), and every locked signer must have signed again.`,
		Example: `  kfm apply --dry-run
  kfm apply --locked          # at boot: kfm-apply.service`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.runApply(cmd, &f, opts)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&opts.Locked, "locked", false, "install exactly what kfm.lock pins; fail if it does not match kfm.yaml")
	fl.BoolVar(&opts.DryRun, "dry-run", false, "print the plan and change nothing")
	fl.BoolVar(&opts.ResetMaps, "reset-maps", false, "allow upgrades that change map definitions, starting from empty maps")
	fl.StringVar(&opts.Netns, "netns", "", "apply only the chains of this network namespace (NAME or PATH as in kfm.yaml's netns:); default: every chain")
	f.register(cmd)
	return cmd
}

// netnsUsage documents --netns of install and remove.
const netnsUsage = "network namespace of the interface: NAME (/run/netns/NAME) or PATH; kfm enters it itself and keeps the host's bpffs, state and config (do not use `ip netns exec`)"

func (g *globals) runApply(cmd *cobra.Command, f *chainFlags, opts chain.ApplyOptions) error {
	m, err := g.manager(cmd.Context(), f)
	if err != nil {
		return err
	}
	res, err := m.Apply(cmd.Context(), opts)
	if err != nil {
		return err
	}
	return g.report(res, func(w io.Writer) error {
		verb := "applied"
		if opts.DryRun {
			verb = "would apply"
		}
		for _, c := range res.Changes {
			if c.Netns != "" {
				fmt.Fprintf(w, "[netns %s] ", c.Netns)
			}
			fmt.Fprintf(w, "%s %s (%s): ", c.Interface, c.Hook, c.Backend)
			if c.Unchanged() {
				fmt.Fprintln(w, "unchanged")
			} else {
				var parts []string
				for _, x := range []struct {
					what  string
					names []string
				}{{"add", c.Added}, {"remove", c.Removed}, {"move", c.Moved}, {"update", c.Updated}} {
					if len(x.names) > 0 {
						parts = append(parts, x.what+" "+strings.Join(x.names, ", "))
					}
				}
				if c.Recovered {
					parts = append(parts, "reload all (finishing a change an earlier kfm did not complete)")
				}
				fmt.Fprintf(w, "%s: %s\n", verb, strings.Join(parts, "; "))
			}
			if len(c.Order) > 0 {
				fmt.Fprintf(w, "  chain: %s\n", strings.Join(c.Order, " -> "))
			}
		}
		if len(res.Changes) == 0 {
			fmt.Fprintln(w, "no chains")
		}
		switch {
		case res.LockChanged && opts.DryRun:
			fmt.Fprintln(w, "kfm.lock would change")
		case res.LockChanged:
			fmt.Fprintln(w, "kfm.lock updated")
		}
		return nil
	})
}

func newLockCommand(g *globals) *cobra.Command {
	var (
		f  chainFlags
		cf chainSetFlags
	)
	cmd := &cobra.Command{
		Use:   "lock",
		Short: "Resolve kfm.yaml and write kfm.lock, without touching the kernel",
		Long: `lock resolves every program of kfm.yaml that kfm.lock does not already pin (tags
and semver ranges to digests), pulls and verifies them, and writes kfm.lock.
Programs the lock already pins stay as they are: use kfm update to move them.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.check(); err != nil {
				return err
			}
			m, err := g.manager(cmd.Context(), &f)
			if err != nil {
				return err
			}
			res, err := m.Apply(cmd.Context(), chain.ApplyOptions{LockOnly: true})
			if err != nil {
				return err
			}
			if cf.name != "" {
				return cf.write(g, res.Lock)
			}
			return g.report(res.Lock, func(w io.Writer) error {
				if res.LockChanged {
					_, err := fmt.Fprintf(w, "kfm.lock written (%d chains)\n", len(res.Lock.Chains))
					return err
				}
				_, err := fmt.Fprintln(w, "kfm.lock is up to date")
				return err
			})
		},
	}
	f.register(cmd)
	cf.register(cmd)
	return cmd
}

func newUpdateCommand(g *globals) *cobra.Command {
	var (
		f    chainFlags
		opts chain.ApplyOptions
	)
	cmd := &cobra.Command{
		Use:   "update [NAME...]",
		Short: "Re-resolve programs (newest versions in their ranges), re-lock and apply",
		Long: `update resolves the named programs (all without names) again: a semver range to
the newest version it allows now, a tag to the digest it names now. It writes
kfm.lock and applies the result like kfm apply.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Update = args
			opts.UpdateAll = len(args) == 0
			return g.runApply(cmd, &f, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "print the plan and change nothing")
	cmd.Flags().BoolVar(&opts.LockOnly, "no-apply", false, "only write kfm.lock")
	cmd.Flags().BoolVar(&opts.ResetMaps, "reset-maps", false, "allow upgrades that change map definitions, starting from empty maps")
	f.register(cmd)
	return cmd
}

func newOutdatedCommand(g *globals) *cobra.Command {
	var f chainFlags
	cmd := &cobra.Command{
		Use:   "outdated",
		Short: "List registry programs with newer versions than kfm.lock pins",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager(cmd.Context(), &f)
			if err != nil {
				return err
			}
			outs, err := m.Outdated(cmd.Context())
			if err != nil {
				return err
			}
			return g.report(outs, func(w io.Writer) error {
				if len(outs) == 0 {
					_, err := fmt.Fprintln(w, "everything is up to date")
					return err
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tINTERFACE\tHOOK\tCURRENT\tWANTED\tLATEST\tREF")
				for _, o := range outs {
					cur := o.Current
					if o.Moved {
						cur += " (tag moved)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.Name, o.Interface, o.Hook, dash(cur), dash(o.Wanted), dash(o.Latest), o.Ref)
				}
				return tw.Flush()
			})
		},
	}
	f.register(cmd)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
