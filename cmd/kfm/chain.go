package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
)

// chainFlags are the flags of commands that change chains.
type chainFlags struct {
	lockTimeout time.Duration
}

func (f *chainFlags) register(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&f.lockTimeout, "lock-timeout", time.Minute, "how long to wait for another kfm process on this host (0: forever)")
}

// manager builds the chain manager with every backend kfm has.
func (g *globals) manager(f *chainFlags) (*chain.Manager, error) {
	var timeout time.Duration
	if f != nil {
		timeout = f.lockTimeout
	}
	return chain.New(chain.Options{
		BPFFS:       g.bpffs,
		StateDir:    g.stateDir,
		Backends:    backends(g.bpffs),
		LockTimeout: timeout,
		Notify:      func(msg string) { fmt.Fprintf(g.err, "kfm: %s\n", msg) },
	})
}

func newInstallCommand(g *globals) *cobra.Command {
	var (
		f        chainFlags
		req      chain.InstallRequest
		hook     string
		priority int
		params   []string
	)
	cmd := &cobra.Command{
		Use:   "install PATH.o --iface IF",
		Short: "Add a program to the chain on an interface's hook (or replace the one of the same name)",
		Long: `install adds a program to the chain on a hook of an interface, in one atomic
change: the hook runs the old chain until the new one, fully loaded and
verified, replaces it. Installing a name that is already on the hook replaces
that program (new code, priority, proceed-on verdicts or params).

Priority and proceed-on default to the object's libxdp XDP_RUN_CONFIG
metadata, else 50 and pass (XDP) or ok (TC). Lower priorities run first.`,
		Example: `  kfm install examples/programs/xdp_count.o --iface eth0
  kfm install examples/programs/xdp_ratelimit.o --iface eth0 --priority 10 --param rate=1000 --param burst=50
  kfm install examples/programs/tc_mark.o --iface eth0 --hook tc-egress --param mark=42`,
		Args: exactArgs(1, "one object file"),
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
			data, err := readObjectFile(args[0])
			if err != nil {
				return err
			}
			req.Source, req.Data = args[0], data
			m, err := g.manager(&f)
			if err != nil {
				return err
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
	fl.StringVar(&hook, "hook", "", "hook: xdp, tc-ingress or tc-egress (default: from the program type)")
	fl.StringVar(&req.Function, "function", "", "entry function (default: the object's only program)")
	fl.StringVar(&req.Name, "name", "", "name of the program in the chain (default: the function name)")
	fl.IntVar(&priority, "priority", 0, "run priority, lower runs first (default: XDP_RUN_CONFIG, else 50)")
	fl.StringVar(&req.ProceedOn, "proceed-on", "", "verdicts on which the packet goes on to the next program, e.g. pass,drop (default: XDP_RUN_CONFIG, else pass / ok)")
	fl.StringArrayVar(&params, "param", nil, "set a parameter (volatile const global): name=value, repeatable")
	fl.StringVar(&req.Mode, "mode", "", "XDP attach mode: native or skb (default: native, or what the chain uses)")
	fl.StringVar(&req.Backend, "backend", "auto", "backend: auto, dispatcher, tailcall, tcx or tc")
	fl.BoolVar(&req.ResetMaps, "reset-maps", false, "allow an upgrade that changes map definitions, starting from empty maps")
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

func readObjectFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file: %w", path, bpf.ErrInvalidObject)
	}
	if st.Size() > bpf.MaxObjectSize {
		return nil, fmt.Errorf("%s: %d bytes is larger than the %d MiB limit: %w", path, st.Size(), bpf.MaxObjectSize>>20, bpf.ErrInvalidObject)
	}
	return os.ReadFile(path)
}

func newRemoveCommand(g *globals) *cobra.Command {
	var (
		f     chainFlags
		iface string
		hook  string
	)
	cmd := &cobra.Command{
		Use:   "remove NAME --iface IF",
		Short: "Take a program off the chain on an interface (removing the last detaches the chain)",
		Args:  exactArgs(1, "one program name"),
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
			m, err := g.manager(&f)
			if err != nil {
				return err
			}
			hs, err := m.Remove(cmd.Context(), iface, h, args[0])
			if err != nil {
				return err
			}
			if hs == nil {
				hs = &chain.HookStatus{Interface: iface, Hook: h, Programs: []chain.ProgramStatus{}}
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
	f.register(cmd)
	return cmd
}

func newStatusCommand(g *globals) *cobra.Command {
	var iface string
	cmd := &cobra.Command{
		Use:   "status [--iface IF]",
		Short: "Show the chains on this host's interfaces, in run order",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager(nil)
			if err != nil {
				return err
			}
			hooks, err := m.Status(cmd.Context(), iface)
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
	return cmd
}

func printHooks(w io.Writer, hooks []chain.HookStatus) error {
	for i, h := range hooks {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s %s: backend %s", h.Interface, h.Hook, h.Backend)
		if h.Mode != "" {
			fmt.Fprintf(w, ", mode %s", h.Mode)
		}
		if h.Backend == "dispatcher" {
			fmt.Fprintf(w, ", dispatcher id %d, protocol version %d", h.RootID, h.Version)
		} else if h.RootID != 0 {
			fmt.Fprintf(w, ", root id %d", h.RootID)
		}
		fmt.Fprintln(w)
		if h.Reason != "" {
			fmt.Fprintf(w, "  backend: %s\n", h.Reason)
		}
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
