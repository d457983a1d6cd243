package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/chain"
)

func newStatsCommand(g *globals) *cobra.Command {
	var (
		iface    string
		interval time.Duration
		sysctl   bool
	)
	cmd := &cobra.Command{
		Use:   "stats [--iface IF] [--interval D]",
		Short: "Show what every program of each chain did: packets per verdict, rates, ns per packet",
		Long: `Show each chain in run order with, per program, the packets it returned each
verdict for (kfm's verdict counters, injected at load; they survive reorders
and upgrades) and the kernel's run statistics where the kernel keeps them.

With --interval, kfm samples twice, that far apart, and adds rates: packets per
second per verdict, and from the kernel's statistics runs per second, ns per
run (per packet) and CPU %. While it samples it holds the kernel's statistics
on (BPF_ENABLE_STATS); it changes the sysctl kernel.bpf_stats_enabled only
with --enable-stats-sysctl, which leaves it on for every BPF program of the
host.

The kernel times only the programs it runs from a hook: programs under the XDP
dispatcher (extensions) and programs of the tailcall backend (tail calls) are
not timed on their own; their time is in the dispatcher's or the root's, shown
for the whole chain. tcx and tc programs are timed one by one.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval < 0 {
				return usageErrorf("--interval must not be negative")
			}
			if sysctl {
				if err := counters.SetSysctl("", true); err != nil {
					return err
				}
				fmt.Fprintln(g.err, "kfm: kernel.bpf_stats_enabled=1: the kernel now times every BPF program until it is set to 0")
			}
			m, err := g.manager(cmd.Context(), nil)
			if err != nil {
				return err
			}
			if interval > 0 {
				if c, err := counters.EnableStats(); err != nil {
					fmt.Fprintf(g.err, "kfm: %v: no kernel run statistics\n", err)
				} else {
					defer c.Close()
				}
			}
			stats, err := m.Stats(cmd.Context(), iface)
			if err != nil {
				return err
			}
			if interval > 0 {
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(interval):
				}
				cur, err := m.Stats(cmd.Context(), iface)
				if err != nil {
					return err
				}
				stats = chain.WithRates(stats, cur)
			}
			return g.report(stats, func(w io.Writer) error {
				if len(stats) == 0 {
					_, err := fmt.Fprintln(w, "no chains")
					return err
				}
				return printStats(w, stats)
			})
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "", "only this interface")
	cmd.Flags().DurationVar(&interval, "interval", 0, "sample twice this far apart and show rates (e.g. 1s)")
	cmd.Flags().BoolVar(&sysctl, "enable-stats-sysctl", false, "set kernel.bpf_stats_enabled=1 (host-wide, stays on)")
	return cmd
}

func printStats(w io.Writer, stats []chain.ChainStats) error {
	for i, c := range stats {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s %s: backend %s", c.Interface, c.Hook, c.Backend)
		if c.Interval > 0 {
			fmt.Fprintf(w, ", over %s", c.Interval.Round(time.Millisecond))
		}
		fmt.Fprintln(w)
		if c.Root != nil {
			what := "root"
			switch c.Backend {
			case "dispatcher":
				what = "dispatcher (whole chain)"
			case "tailcall":
				what = "root (whole chain)"
			case "tcx", "tc":
				what = "gate"
			}
			fmt.Fprintf(w, "  %s id %d: %s\n", what, c.RootID, runText(*c.Root, c.RootRate))
		}
		if len(c.Programs) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		var head []string
		for _, v := range (counters.Counts{}).Verdicts(c.Hook) {
			head = append(head, strings.ToUpper(v.Verdict))
		}
		fmt.Fprintf(tw, "  POS\tNAME\tID\tPACKETS\t%s", strings.Join(head, "\t"))
		rates := c.Interval > 0
		if rates {
			fmt.Fprint(tw, "\tPKT/S\tDROP%")
		}
		fmt.Fprint(tw, "\tNS/PKT\n")
		var notes []string
		for _, p := range c.Programs {
			fmt.Fprintf(tw, "  %d\t%s\t%d\t", p.Position, p.Name, p.ProgramID)
			if !p.Counting {
				fmt.Fprintf(tw, "-%s", strings.Repeat("\t-", len(head)))
			} else {
				fmt.Fprintf(tw, "%d", p.Packets)
				for _, v := range p.Verdicts {
					fmt.Fprintf(tw, "\t%d", v.Packets)
				}
			}
			if rates {
				if p.PacketsPerSecond != nil {
					fmt.Fprintf(tw, "\t%.1f\t%s", *p.PacketsPerSecond, dropPercent(c, p))
				} else {
					fmt.Fprint(tw, "\t-\t-")
				}
			}
			fmt.Fprintf(tw, "\t%s\n", nsText(p))
			if p.NotTimed != "" && !containsString(notes, p.NotTimed) {
				notes = append(notes, p.NotTimed)
			}
			if !p.Counting {
				n := "- in PACKETS: no verdict counters (counters: false, or loaded by another tool or an older kfm)"
				if !containsString(notes, n) {
					notes = append(notes, n)
				}
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, n := range notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	return nil
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// dropPercent is the share of the interval's packets the program dropped.
func dropPercent(c chain.ChainStats, p chain.ProgramStats) string {
	if p.PacketsPerSecond == nil || *p.PacketsPerSecond == 0 {
		return "-"
	}
	var drop float64
	for _, v := range p.VerdictRates {
		if v.Verdict == "drop" || v.Verdict == "aborted" || v.Verdict == "shot" {
			drop += v.PacketsPerSecond
		}
	}
	return fmt.Sprintf("%.1f", 100*drop / *p.PacketsPerSecond)
}

// nsText is the program's time per run: over the interval when known, else
// since statistics were first enabled.
func nsText(p chain.ProgramStats) string {
	switch {
	case p.RunRate != nil && p.RunRate.NsPerRun != nil:
		return fmt.Sprintf("%.1f", *p.RunRate.NsPerRun)
	case p.Run != nil && p.Run.RunCount > 0 && p.Run.RunTime > 0:
		return fmt.Sprintf("%.1f", float64(p.Run.RunTime)/float64(p.Run.RunCount))
	case p.NotTimed != "":
		return "n/a"
	}
	return "-"
}

func runText(r counters.RunStats, rate *chain.RunRate) string {
	if rate != nil {
		s := fmt.Sprintf("%.1f runs/s", rate.RunsPerSecond)
		if rate.NsPerRun != nil {
			s += fmt.Sprintf(", %.1f ns/run, %.2f%% CPU", *rate.NsPerRun, rate.CPUPercent)
		}
		return s
	}
	if r.RunCount == 0 || r.RunTime == 0 {
		return fmt.Sprintf("%d runs (run time unknown: kernel statistics off; use --interval)", r.RunCount)
	}
	return fmt.Sprintf("%d runs, %.1f ns/run", r.RunCount, float64(r.RunTime)/float64(r.RunCount))
}
