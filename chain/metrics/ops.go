package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Ops counts the changes a long-running process makes:
//
//	kfm_apply_total{result}                 applies, result ok or error
//	kfm_apply_duration_seconds              histogram of their durations
//	kfm_reconcile_total{source,result}      reconcile rounds of the node agent
//	kfm_reconcile_duration_seconds{source}  histogram of their durations
//
// The node agent feeds it and registers it beside its Exporter. A one-shot
// `kfm apply` exits before anyone could scrape it, so it exposes none of
// these (its exit code and output say how it went).
type Ops struct {
	applies       *prometheus.CounterVec
	applyTime     prometheus.Histogram
	reconciles    *prometheus.CounterVec
	reconcileTime *prometheus.HistogramVec
}

// durationBuckets span a warm no-op apply (milliseconds) to a slow pull
// and verifier run (a minute).
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// NewOps returns empty counters.
func NewOps() *Ops {
	return &Ops{
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kfm_apply_total", Help: "Applies of the desired chains to the kernel, by result (ok, error).",
		}, []string{"result"}),
		applyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kfm_apply_duration_seconds", Help: "Duration of applies.", Buckets: durationBuckets,
		}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kfm_reconcile_total", Help: "Reconcile rounds of the node agent, by desired-state source and result (ok, error).",
		}, []string{"source", "result"}),
		reconcileTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kfm_reconcile_duration_seconds", Help: "Duration of reconcile rounds, by desired-state source.", Buckets: durationBuckets,
		}, []string{"source"}),
	}
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// ObserveApply records one apply that took d and ended with err.
func (o *Ops) ObserveApply(d time.Duration, err error) {
	o.applies.WithLabelValues(result(err)).Inc()
	o.applyTime.Observe(d.Seconds())
}

// ObserveReconcile records one reconcile round of source (config-dir,
// registry, kubernetes...) that took d and ended with err.
func (o *Ops) ObserveReconcile(source string, d time.Duration, err error) {
	o.reconciles.WithLabelValues(source, result(err)).Inc()
	o.reconcileTime.WithLabelValues(source).Observe(d.Seconds())
}

// Describe implements prometheus.Collector.
func (o *Ops) Describe(ch chan<- *prometheus.Desc) {
	o.applies.Describe(ch)
	o.applyTime.Describe(ch)
	o.reconciles.Describe(ch)
	o.reconcileTime.Describe(ch)
}

// Collect implements prometheus.Collector.
func (o *Ops) Collect(ch chan<- prometheus.Metric) {
	o.applies.Collect(ch)
	o.applyTime.Collect(ch)
	o.reconciles.Collect(ch)
	o.reconcileTime.Collect(ch)
}
