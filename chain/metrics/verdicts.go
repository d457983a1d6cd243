package metrics

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/chain"
)

// Verdicts exposes kfm's verdict counters (see package bpf/counters: every
// program kfm chains counts the packets of each verdict it returns, on
// every backend) and the kernel's run statistics where the kernel keeps
// them:
//
//	kfm_program_packets_total{ProgramLabelNames...,verdict}  packets per verdict
//	kfm_program_runs_total{ProgramLabelNames...}             kernel run_cnt (tcx, tc)
//	kfm_program_run_seconds_total{ProgramLabelNames...}      kernel run_time_ns (tcx, tc)
//	kfm_chain_runs_total{interface,hook,netns}               the root's run_cnt (dispatcher, tailcall)
//	kfm_chain_run_seconds_total{interface,hook,netns}        the root's run_time_ns
//
// verdict is one of aborted, drop, pass, tx, redirect, other (XDP) or ok,
// shot, redirect, next, other (TC). A program whose counters are switched
// off (counters: false) has no packets series.
//
// The kernel times a program only while statistics are enabled (a process
// holding BPF_ENABLE_STATS, as `kfm metrics` and `kfm agent` do for their
// lifetime, or the sysctl kernel.bpf_stats_enabled), and never times the
// extensions of the XDP dispatcher or programs reached by a tail call: for
// those backends only the chain as a whole (its root program) is timed.
//
// Cost: one read of a pinned per-CPU array per program and one
// BPF_OBJ_GET_INFO_BY_FD per timed program per scrape.
type Verdicts struct{}

var (
	packetsDesc = prometheus.NewDesc("kfm_program_packets_total",
		"Packets a chained program returned, by verdict (counted by kfm's injected counters).",
		append(append([]string{}, ProgramLabelNames...), "verdict"), nil)
	programRunsDesc = prometheus.NewDesc("kfm_program_runs_total",
		"Times the kernel ran the program (while BPF statistics are enabled; tcx and tc chains only).",
		ProgramLabelNames, nil)
	programRunTimeDesc = prometheus.NewDesc("kfm_program_run_seconds_total",
		"Time the kernel spent in the program (while BPF statistics are enabled; tcx and tc chains only).",
		ProgramLabelNames, nil)
	chainRunsDesc = prometheus.NewDesc("kfm_chain_runs_total",
		"Times the kernel ran the chain's root program (dispatcher or tail-call root; while BPF statistics are enabled).",
		[]string{"interface", "hook", "netns"}, nil)
	chainRunTimeDesc = prometheus.NewDesc("kfm_chain_run_seconds_total",
		"Time the kernel spent in the chain's root program and everything it called (dispatcher or tail-call root).",
		[]string{"interface", "hook", "netns"}, nil)
)

// Name implements Collector.
func (Verdicts) Name() string { return "verdicts" }

// Collect implements Collector.
func (Verdicts) Collect(ctx context.Context, s *chain.Snapshot, ch chan<- prometheus.Metric) error {
	var errs []error
	for i := range s.Hooks {
		h := &s.Hooks[i]
		rootTimed := h.Backend == "dispatcher" || h.Backend == "tailcall"
		if rootTimed && h.RootID != 0 {
			if rs, err := counters.ProgramRunStats(h.RootID); err == nil {
				ch <- prometheus.MustNewConstMetric(chainRunsDesc, prometheus.CounterValue, float64(rs.RunCount), h.Interface, string(h.Hook), h.Netns)
				ch <- prometheus.MustNewConstMetric(chainRunTimeDesc, prometheus.CounterValue, rs.RunTime.Seconds(), h.Interface, string(h.Hook), h.Netns)
			}
		}
		for j := range h.Programs {
			p := &h.Programs[j]
			lv := ProgramLabels(h, p)
			if p.MapDir != "" {
				c, err := readCounters(ctx, filepath.Join(p.MapDir, counters.PinName))
				switch {
				case err == nil:
					for _, v := range c.Verdicts(h.Hook) {
						ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(v.Packets), append(lv[:len(lv):len(lv)], v.Verdict)...)
					}
				case errors.Is(err, fs.ErrNotExist):
					// counters: false
				default:
					errs = append(errs, fmt.Errorf("%s %s: %s: %w", h.Interface, h.Hook, p.Name, err))
				}
			}
			if !rootTimed {
				if rs, err := counters.ProgramRunStats(p.ProgramID); err == nil {
					ch <- prometheus.MustNewConstMetric(programRunsDesc, prometheus.CounterValue, float64(rs.RunCount), lv...)
					ch <- prometheus.MustNewConstMetric(programRunTimeDesc, prometheus.CounterValue, rs.RunTime.Seconds(), lv...)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// readCounters is counters.ReadPinned through openPinned.
func readCounters(ctx context.Context, path string) (counters.Counts, error) {
	m, release, err := openPinned(ctx, path)
	if err != nil {
		return counters.Counts{}, fmt.Errorf("open the verdict counters %s: %w", path, err)
	}
	defer release()
	if err := counters.Compatible(m); err != nil {
		return counters.Counts{}, fmt.Errorf("%s: %w", path, err)
	}
	return counters.Read(m)
}
