package metrics

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kfm-project/kfm/chain"
)

// Source says what runs on the host; *chain.Manager is one.
type Source interface {
	Snapshot(ctx context.Context) (*chain.Snapshot, error)
}

// Collector turns a snapshot into metrics. Collect sends what it can and
// returns the first error it met; the exporter reports the error in the
// scrape (and in kfm_exporter_errors) and keeps the other collectors'
// metrics.
type Collector interface {
	// Name identifies the collector in kfm_exporter_errors.
	Name() string
	Collect(ctx context.Context, s *chain.Snapshot, ch chan<- prometheus.Metric) error
}

// DefaultCollectors are what `kfm metrics` exposes.
func DefaultCollectors() []Collector {
	return []Collector{ChainInfo{}, Verdicts{}, Declared{}, MapFill{}}
}

// Exporter is a prometheus.Collector reading the host on every scrape.
// It is unchecked (Describe sends nothing): which metrics exist depends on
// what runs.
type Exporter struct {
	mu         sync.Mutex // one scrape reads the host at a time
	src        Source
	collectors []Collector
	timeout    time.Duration
	pins       pins // maps kept open between scrapes
}

// Options configure an Exporter.
type Options struct {
	// Collectors default to DefaultCollectors.
	Collectors []Collector
	// Timeout bounds one scrape's reading of the host (default 10 s).
	Timeout time.Duration
}

// New returns an Exporter reading src.
func New(src Source, opts *Options) *Exporter {
	e := &Exporter{src: src, collectors: DefaultCollectors(), timeout: 10 * time.Second}
	if opts != nil {
		if opts.Collectors != nil {
			e.collectors = opts.Collectors
		}
		if opts.Timeout > 0 {
			e.timeout = opts.Timeout
		}
	}
	return e
}

var (
	scrapeDurationDesc = prometheus.NewDesc("kfm_exporter_scrape_duration_seconds",
		"Time the exporter took to read the host for this scrape.", nil, nil)
	errorsDesc = prometheus.NewDesc("kfm_exporter_errors",
		"Errors the exporter's collectors met in this scrape (1: that collector's metrics are incomplete).", []string{"collector"}, nil)
)

// Describe sends nothing: the Exporter is an unchecked collector.
func (e *Exporter) Describe(chan<- *prometheus.Desc) {}

// Collect reads the host and sends every collector's metrics.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	snap, err := e.src.Snapshot(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(errorsDesc, fmt.Errorf("read the host: %w", err))
		return
	}
	e.pins.begin(snap.Generation)
	defer e.pins.end()
	ctx = context.WithValue(ctx, pinsKey{}, &e.pins)
	for _, c := range e.collectors {
		n := 0.0
		if err := c.Collect(ctx, snap, ch); err != nil {
			n = 1
			ch <- prometheus.NewInvalidMetric(errorsDesc, fmt.Errorf("%s: %w", c.Name(), err))
		}
		ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.GaugeValue, n, c.Name())
	}
	ch <- prometheus.MustNewConstMetric(scrapeDurationDesc, prometheus.GaugeValue, time.Since(start).Seconds())
}

// ProgramLabelNames are the labels of every per-program metric, in the
// order ProgramLabels returns their values.
var ProgramLabelNames = []string{"interface", "hook", "position", "program", "digest", "netns"}

// ProgramLabels are the values of ProgramLabelNames for program p of chain
// h. digest is the bundle's manifest digest ("" for local objects); netns
// the chain's network namespace path ("" for the host's, which Prometheus
// shows as no label: the same interface name in two namespaces, eth0 of
// every pod, stays two series).
func ProgramLabels(h *chain.HookSnapshot, p *chain.ProgramSnapshot) []string {
	return []string{h.Interface, string(h.Hook), strconv.Itoa(p.Position), p.Name, p.Digest, h.Netns}
}
