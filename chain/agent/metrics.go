package agent

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agent's own counters, in Prometheus form. Register them
// with the registry the /metrics endpoint serves (program-level metrics
// come from another package and share that registry).
type Metrics struct {
	Reconciles     prometheus.Counter
	Failures       prometheus.Counter
	LastSuccess    prometheus.Gauge
	SourceRefusals *prometheus.CounterVec
	Chains         *prometheus.GaugeVec
}

// NewMetrics creates the agent's metrics and registers them with reg
// (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Reconciles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kfm_agent_reconciles_total",
			Help: "Reconciles the agent ran (source changes, link events, drift checks, retries).",
		}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kfm_agent_reconcile_failures_total",
			Help: "Reconciles that left at least one chain not applied.",
		}),
		LastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kfm_agent_last_success_timestamp_seconds",
			Help: "Unix time of the last reconcile that applied every chain.",
		}),
		SourceRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kfm_agent_source_refusals_total",
			Help: "Desired states the source fetched and refused (bad signature, unparsable), by reason; the running chains stay.",
		}, []string{"reason"}),
		Chains: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kfm_agent_chains",
			Help: "Chains (per interface and hook) after the last reconcile, by state (applied or the reason they are not).",
		}, []string{"state"}),
	}
	if reg != nil {
		reg.MustRegister(m.Reconciles, m.Failures, m.LastSuccess, m.SourceRefusals, m.Chains)
	}
	return m
}

// Refused counts a desired state a source refused; nil-safe.
func (m *Metrics) Refused(reason string) {
	if m != nil {
		m.SourceRefusals.WithLabelValues(reason).Inc()
	}
}
