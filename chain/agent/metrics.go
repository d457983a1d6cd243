package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kfm-project/kfm/chain/metrics"
)

// Metrics are what the agent counts, in Prometheus form, on top of what
// every scrape reads from the host (package chain/metrics' Exporter, which
// shares the registry):
//
//	kfm_reconcile_total{source,result}              reconcile rounds (result ok or error)
//	kfm_reconcile_duration_seconds{source}          their durations (histogram)
//	kfm_apply_total{result}                          applies of one owner's chains (ok or error)
//	kfm_apply_duration_seconds                       their durations (histogram)
//	kfm_reconcile_last_success_timestamp_seconds    end of the last round that applied everything
//	kfm_reconcile_chains{state}                      chains per interface and hook after the last round,
//	                                                 by state: applied, or the reason they are not
//	kfm_source_refusals_total{reason}               desired states the source fetched and refused
//
// The first four are chain/metrics' Ops, the set any long-running kfm
// process exposes; the names follow its kfm_reconcile_ prefix.
type Metrics struct {
	Ops            *metrics.Ops
	LastSuccess    prometheus.Gauge
	SourceRefusals *prometheus.CounterVec
	Chains         *prometheus.GaugeVec
}

// NewMetrics creates the agent's metrics and registers them with reg
// (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Ops: metrics.NewOps(),
		LastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kfm_reconcile_last_success_timestamp_seconds",
			Help: "Unix time of the end of the last reconcile round that applied every chain.",
		}),
		SourceRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kfm_source_refusals_total",
			Help: "Desired states the source fetched and refused (bad signature, unparsable), by reason; the running chains stay.",
		}, []string{"reason"}),
		Chains: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kfm_reconcile_chains",
			Help: "Chains (per interface and hook) after the last reconcile round, by state (applied or the reason they are not).",
		}, []string{"state"}),
	}
	if reg != nil {
		reg.MustRegister(m.Ops, m.LastSuccess, m.SourceRefusals, m.Chains)
	}
	return m
}

// Refused counts a desired state a source refused; nil-safe.
func (m *Metrics) Refused(reason string) {
	if m != nil {
		m.SourceRefusals.WithLabelValues(reason).Inc()
	}
}
