package metrics

import (
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultListen is where `kfm metrics` listens by default: loopback only
// (the metrics name interfaces and programs), on a port of its own.
const DefaultListen = "127.0.0.1:9678"

// NewRegistry returns a registry holding the exporter, ops (may be nil)
// and the Go runtime and process collectors of the exporting process
// (go_*, process_*: its memory and CPU).
func NewRegistry(e *Exporter, ops *Ops) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	if ops != nil {
		reg.MustRegister(ops)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves g in the Prometheus text or protobuf format. A collector's
// error is logged to errorLog (nil: discarded) and leaves out its metrics;
// the others are served.
func Handler(g prometheus.Gatherer, errorLog *log.Logger) http.Handler {
	opts := promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4}
	if errorLog != nil {
		opts.ErrorLog = errorLog
	}
	return promhttp.HandlerFor(g, opts)
}
