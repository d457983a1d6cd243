package metrics

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kfm-project/kfm/chain"
)

// ChainInfo exposes the chains and their programs:
//
//	kfm_chain_info{interface,hook,backend,lock_digest,netns} 1
//	kfm_chain_programs{interface,hook,netns}                 programs in the chain
//	kfm_program_info{interface,hook,position,program,digest,netns,program_id,tag,origin} 1
//
// lock_digest is the sha256 of <config-dir>/kfm.lock ("" without one).
// origin is kfm, libxdp (a program another tool added to a dispatcher) or
// unknown.
type ChainInfo struct{}

var (
	chainInfoDesc = prometheus.NewDesc("kfm_chain_info",
		"A chain kfm runs: its backend and the digest of the kfm.lock it was applied from.",
		[]string{"interface", "hook", "backend", "lock_digest", "netns"}, nil)
	chainProgramsDesc = prometheus.NewDesc("kfm_chain_programs",
		"Programs in a chain.", []string{"interface", "hook", "netns"}, nil)
	programInfoDesc = prometheus.NewDesc("kfm_program_info",
		"A program of a chain, in run order (position 0 runs first).",
		append(append([]string{}, ProgramLabelNames...), "program_id", "tag", "origin"), nil)
)

// Name implements Collector.
func (ChainInfo) Name() string { return "chains" }

// Collect implements Collector.
func (ChainInfo) Collect(_ context.Context, s *chain.Snapshot, ch chan<- prometheus.Metric) error {
	for i := range s.Hooks {
		h := &s.Hooks[i]
		ch <- prometheus.MustNewConstMetric(chainInfoDesc, prometheus.GaugeValue, 1, h.Interface, string(h.Hook), h.Backend, s.LockDigest, h.Netns)
		ch <- prometheus.MustNewConstMetric(chainProgramsDesc, prometheus.GaugeValue, float64(len(h.Programs)), h.Interface, string(h.Hook), h.Netns)
		for j := range h.Programs {
			p := &h.Programs[j]
			lv := append(ProgramLabels(h, p), strconv.FormatUint(uint64(p.ProgramID), 10), p.Tag, p.Origin)
			ch <- prometheus.MustNewConstMetric(programInfoDesc, prometheus.GaugeValue, 1, lv...)
		}
	}
	return nil
}
