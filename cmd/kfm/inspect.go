package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/bpf"
)

func newInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE.o",
		Short: "Describe a BPF object: programs, params, maps, licence, libxdp run config",
		Long: `inspect describes a BPF object: its entry functions with program type and
section, the parameters a user may set at install time (volatile const
globals) with their types and defaults, its maps, licence, whether it has BTF,
and libxdp's XDP_RUN_CONFIG metadata when present.`,
		Example: `  kfm inspect examples/programs/xdp_ratelimit.o
  kfm inspect examples/programs/xdp_ratelimit.o -o json`,
		Args: exactArgs(1, "one object file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			obj, err := bpf.ReadObject(args[0])
			if err != nil {
				return err
			}
			return g.report(obj, func(w io.Writer) error { return printObject(w, args[0], obj) })
		},
	}
}

func printObject(w io.Writer, name string, o *bpf.Object) error {
	yesNo := map[bool]string{true: "yes", false: "no"}
	fmt.Fprintf(w, "%s\n", name)
	fmt.Fprintf(w, "  sha256:   %s\n  size:     %d bytes\n  license:  %s\n  btf:      %s\n", o.SHA256, o.Size, o.License, yesNo[o.BTF])

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nPROGRAMS\n  FUNCTION\tSECTION\tTYPE\tHOOKS\tPRIORITY\tPROCEED-ON\n")
	for _, p := range o.Programs {
		prio, proceed := "-", "-"
		if p.Type == "xdp" {
			rc, declared := o.RunConfigFor(p.Function)
			src := " (default)"
			if declared {
				src = " (XDP_RUN_CONFIG)"
			}
			prio = fmt.Sprintf("%d%s", rc.Priority, src)
			proceed = strings.Join(rc.ProceedOn.Names(bpf.HookXDP), ",")
		}
		hooks := make([]string, len(p.Hooks))
		for i, h := range p.Hooks {
			hooks[i] = string(h)
		}
		if len(hooks) == 0 {
			hooks = []string{"(not chainable)"}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", p.Function, p.Section, p.Type, strings.Join(hooks, ","), prio, proceed)
	}
	if len(o.Params) > 0 {
		fmt.Fprintf(tw, "\nPARAMS\n  NAME\tTYPE\tDEFAULT\n")
		for _, p := range o.Params {
			fmt.Fprintf(tw, "  %s\t%s\t%v\n", p.Name, p.Type, p.Default)
		}
	}
	if len(o.Maps) > 0 {
		fmt.Fprintf(tw, "\nMAPS\n  NAME\tTYPE\tKEY\tVALUE\tMAX-ENTRIES\tPINNING\n")
		for _, m := range o.Maps {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%s\n", m.Name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Pinning)
		}
	}
	return tw.Flush()
}
