package metrics_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/metrics"
)

// programCount is a Collector of one metric: how many programs run per
// hook. A collector of kfm's verdict counters has the same shape.
type programCount struct{}

var programCountDesc = prometheus.NewDesc("example_programs", "Programs per hook.", []string{"interface", "hook"}, nil)

func (programCount) Name() string { return "example" }

func (programCount) Collect(_ context.Context, s *chain.Snapshot, ch chan<- prometheus.Metric) error {
	for _, h := range s.Hooks {
		ch <- prometheus.MustNewConstMetric(programCountDesc, prometheus.GaugeValue, float64(len(h.Programs)), h.Interface, string(h.Hook))
	}
	return nil
}

// A long-running process (the node agent) serves kfm's metrics with one
// more collector and counts its applies.
func Example() {
	m, err := chain.New(chain.Options{BPFFS: "/sys/fs/bpf", StateDir: "/run/kfm", ConfigDir: "/etc/kfm"})
	if err != nil {
		log.Fatal(err)
	}
	exp := metrics.New(m, &metrics.Options{
		Collectors: append(metrics.DefaultCollectors(), programCount{}),
	})
	ops := metrics.NewOps()
	http.Handle("/metrics", metrics.Handler(metrics.NewRegistry(exp, ops), log.Default()))

	start := time.Now()
	_, err = m.Apply(context.Background(), chain.ApplyOptions{})
	ops.ObserveApply(time.Since(start), err)
}
