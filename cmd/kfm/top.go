package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/chain"
)

// Sort keys of kfm top: the key a user presses, and the --sort value.
type topSort struct {
	key        byte
	name, help string
}

var topSorts = []topSort{
	{'o', "order", "run order"},
	{'p', "packets", "packets/s"},
	{'d', "drop", "drop %"},
	{'n', "ns", "ns/packet"},
	{'c', "cpu", "CPU %"},
}

func newTopCommand(g *globals) *cobra.Command {
	var (
		iface    string
		interval time.Duration
		sortBy   string
		sysctl   bool
	)
	cmd := &cobra.Command{
		Use:   "top [--iface IF] [--sort KEY]",
		Short: "Live view of every chained program: packets/s, drop %, ns/packet, CPU %",
		Long: `A live view of every chain, refreshed every second (--interval), like top:
per program packets per second and drop share (kfm's verdict counters), and
ns per packet and CPU % where the kernel times the program. kfm top holds
the kernel's run statistics on (BPF_ENABLE_STATS) while it runs; the sysctl
kernel.bpf_stats_enabled only changes with --enable-stats-sysctl.

The kernel times programs it runs from a hook only: under the XDP dispatcher
and on the tailcall backend the individual programs show n/a, and the
chain's own row (*) shows the time of the whole chain.

Keys: o run order, p packets/s, d drop %, n ns/packet, c CPU % (sort,
descending), q quit.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return usageErrorf("--interval must be positive")
			}
			if !slices.ContainsFunc(topSorts, func(s topSort) bool { return s.name == sortBy }) {
				return usageErrorf("--sort %q: use order, packets, drop, ns or cpu", sortBy)
			}
			if sysctl {
				if err := counters.SetSysctl("", true); err != nil {
					return err
				}
			}
			m, err := g.manager(cmd.Context(), nil)
			if err != nil {
				return err
			}
			if c, err := counters.EnableStats(); err != nil {
				fmt.Fprintf(g.err, "kfm: %v: no ns/packet or CPU %%\n", err)
			} else {
				defer c.Close()
			}
			return runTop(cmd.Context(), g, m, iface, interval, sortBy)
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "", "only this interface")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "refresh interval")
	cmd.Flags().StringVar(&sortBy, "sort", "order", "sort by: order, packets, drop, ns or cpu")
	cmd.Flags().BoolVar(&sysctl, "enable-stats-sysctl", false, "set kernel.bpf_stats_enabled=1 (host-wide, stays on)")
	return cmd
}

// runTop redraws the view every interval until q, Ctrl-C or the context
// ends. With a terminal on stdin it reads single keys (raw mode); without
// one it still refreshes.
func runTop(ctx context.Context, g *globals, m *chain.Manager, iface string, interval time.Duration, sortBy string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	keys := make(chan byte, 8)
	if f, ok := g.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err == nil {
			defer term.Restore(int(f.Fd()), old)
		}
		go func() {
			b := make([]byte, 1)
			for {
				n, err := f.Read(b)
				if err != nil {
					return
				}
				if n == 1 {
					select {
					case keys <- b[0]:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	prev, err := m.Stats(ctx, iface)
	if err != nil {
		return err
	}
	var rows []topRow
	tick := time.NewTicker(interval)
	defer tick.Stop()
	draw := func() {
		var b strings.Builder
		b.WriteString("\x1b[H\x1b[2J")
		renderTop(&b, rows, sortBy, interval)
		// Raw mode: lines need a carriage return.
		io.WriteString(g.out, strings.ReplaceAll(b.String(), "\n", "\r\n"))
	}
	rows = topRows(prev)
	draw()
	for {
		select {
		case <-ctx.Done():
			return nil
		case k := <-keys:
			switch k {
			case 'q', 3: // q, Ctrl-C (raw mode delivers it as a byte)
				io.WriteString(g.out, "\r\n")
				return nil
			}
			for _, s := range topSorts {
				if s.key == k {
					sortBy = s.name
					draw()
				}
			}
		case <-tick.C:
			cur, err := m.Stats(ctx, iface)
			if err != nil {
				return err
			}
			rows = topRows(chain.WithRates(prev, cur))
			prev = cur
			draw()
		}
	}
}

// topRow is one line of kfm top: a program, or (Name "*") a chain's own
// program on the hook, whose time is the whole chain's for the dispatcher
// and tailcall backends.
type topRow struct {
	Chain   string // "iface hook"
	Backend string
	Pos     int // -1 for the chain row
	Name    string
	PPS     *float64
	Drop    *float64
	NsPkt   *float64
	CPU     *float64
	NA      bool // the kernel does not time it
}

func topRows(stats []chain.ChainStats) []topRow {
	var rows []topRow
	for _, c := range stats {
		name := c.Interface + " " + string(c.Hook)
		root := topRow{Chain: name, Backend: c.Backend, Pos: -1, Name: "*"}
		if r := c.RootRate; r != nil {
			pps := r.RunsPerSecond
			root.PPS, root.NsPkt = &pps, r.NsPerRun
			cpu := r.CPUPercent
			root.CPU = &cpu
		}
		rows = append(rows, root)
		for _, p := range c.Programs {
			r := topRow{Chain: name, Backend: c.Backend, Pos: p.Position, Name: p.Name, PPS: p.PacketsPerSecond, NA: p.NotTimed != ""}
			if p.PacketsPerSecond != nil && *p.PacketsPerSecond > 0 {
				var drop float64
				for _, v := range p.VerdictRates {
					if v.Verdict == "drop" || v.Verdict == "aborted" || v.Verdict == "shot" {
						drop += v.PacketsPerSecond
					}
				}
				d := 100 * drop / *p.PacketsPerSecond
				r.Drop = &d
			}
			if rr := p.RunRate; rr != nil {
				r.NsPkt = rr.NsPerRun
				cpu := rr.CPUPercent
				r.CPU = &cpu
			}
			rows = append(rows, r)
		}
	}
	return rows
}

// renderTop writes the view: a header line, then the rows sorted by
// sortBy (descending; unknown values last; ties in run order).
func renderTop(w io.Writer, rows []topRow, sortBy string, interval time.Duration) {
	rows = slices.Clone(rows)
	val := func(r topRow) *float64 {
		switch sortBy {
		case "packets":
			return r.PPS
		case "drop":
			return r.Drop
		case "ns":
			return r.NsPkt
		case "cpu":
			return r.CPU
		}
		return nil
	}
	slices.SortStableFunc(rows, func(a, b topRow) int {
		if sortBy != "order" {
			va, vb := val(a), val(b)
			switch {
			case va != nil && vb != nil && *va != *vb:
				return cmp.Compare(*vb, *va)
			case va != nil && vb == nil:
				return -1
			case va == nil && vb != nil:
				return 1
			}
		}
		if c := strings.Compare(a.Chain, b.Chain); c != 0 {
			return c
		}
		return a.Pos - b.Pos
	})
	var keys []string
	for _, s := range topSorts {
		k := fmt.Sprintf("%c %s", s.key, s.help)
		if s.name == sortBy {
			k = "[" + k + "]"
		}
		keys = append(keys, k)
	}
	fmt.Fprintf(w, "kfm top - every %s - sort: %s - q quit\n\n", interval, strings.Join(keys, ", "))
	if len(rows) == 0 {
		fmt.Fprintln(w, "no chains")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHAIN\tBACKEND\tPOS\tPROGRAM\tPKT/S\tDROP%\tNS/PKT\tCPU%")
	num := func(v *float64, prec int, na bool) string {
		switch {
		case v != nil:
			return fmt.Sprintf("%.*f", prec, *v)
		case na:
			return "n/a"
		}
		return "-"
	}
	for _, r := range rows {
		pos := fmt.Sprint(r.Pos)
		if r.Pos < 0 {
			pos = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Chain, r.Backend, pos, r.Name,
			num(r.PPS, 0, false), num(r.Drop, 1, false), num(r.NsPkt, 1, r.NA), num(r.CPU, 2, r.NA))
	}
	tw.Flush()
}
