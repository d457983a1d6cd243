package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/metrics"
)

func newMetricsCommand(g *globals) *cobra.Command {
	var (
		listen string
		once   bool
	)
	cmd := &cobra.Command{
		Use:   "metrics [--listen ADDR] [--once]",
		Short: "Serve Prometheus metrics of the chains on this host (for hosts without the agent)",
		Long: `metrics serves the chains of this host as Prometheus metrics on
http://ADDR/metrics (default ` + metrics.DefaultListen + `, loopback only; use
--listen :9678 to be scraped from other hosts). Every scrape reads the kernel
and the host state afresh: chains and programs (kfm_chain_info,
kfm_program_info), the maps publishers declared as metrics in their
bundle.yaml, and how full the hash maps of installed programs are
(kfm_map_fill_ratio). The node agent serves the same metrics.

With --once, metrics prints one scrape to standard output (the Prometheus text
format, or JSON with -o json) and exits.`,
		Example: `  kfm metrics
  kfm metrics --listen 0.0.0.0:9678
  kfm metrics --once | grep portfilter`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !once {
				serverMemoryLimit()
			}
			ctx := cmd.Context()
			m, err := g.manager(ctx, nil)
			if err != nil {
				return err
			}
			if once {
				// Read the host here, on the command's goroutine
				// (the registry gathers on goroutines of its own).
				snap, err := m.Snapshot(ctx)
				if err != nil {
					return err
				}
				reg := metrics.NewRegistry(metrics.New(fixedSnapshot{snap}, nil), nil)
				mfs, err := reg.Gather()
				if err != nil {
					fmt.Fprintf(g.err, "kfm: some metrics are missing: %v\n", err)
				}
				return g.report(familiesJSON(mfs), func(w io.Writer) error {
					enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
					for _, mf := range mfs {
						if err := enc.Encode(mf); err != nil {
							return err
						}
					}
					return nil
				})
			}
			if stats := holdStats(func(msg string, args ...any) { fmt.Fprintf(g.err, "kfm: warning: %s: %v\n", msg, args[len(args)-1]) }); stats != nil {
				defer stats.Close()
			}
			// Scrapes read the host on this goroutine (see
			// serialSource), handlers ask it over reqs.
			reqs := make(chan snapshotRequest)
			reg := metrics.NewRegistry(metrics.New(serialSource{reqs, ctx.Done()}, nil), nil)
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w (choose another address with --listen)", listen, err)
			}
			mux := http.NewServeMux()
			mux.Handle("/metrics", metrics.Handler(reg, log.New(g.err, "kfm: metrics: ", 0)))
			mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/" {
					http.NotFound(w, r)
					return
				}
				fmt.Fprintln(w, "kfm metrics: see /metrics")
			})
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(g.err, "kfm: serving metrics on http://%s/metrics\n", ln.Addr())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			for {
				select {
				case req := <-reqs:
					snap, err := m.Snapshot(req.ctx)
					req.reply <- snapshotReply{snap, err}
				case err := <-done:
					return err
				case <-ctx.Done():
					sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
						return err
					}
					return nil
				}
			}
		},
	}
	cmd.Flags().StringVar(&listen, "listen", metrics.DefaultListen, "address to serve /metrics on")
	cmd.Flags().BoolVar(&once, "once", false, "print one scrape and exit")
	return cmd
}

// fixedSnapshot is a metrics.Source that was read once.
type fixedSnapshot struct{ s *chain.Snapshot }

func (f fixedSnapshot) Snapshot(context.Context) (*chain.Snapshot, error) { return f.s, nil }

// serialSource reads the host on the goroutine that runs the command, one
// scrape at a time: that goroutine is the one in the network namespace kfm
// was started in, even when only its thread was moved into it (as the tests
// do; other threads of the process may be elsewhere).
type serialSource struct {
	reqs chan<- snapshotRequest
	done <-chan struct{}
}

type snapshotRequest struct {
	ctx   context.Context
	reply chan snapshotReply
}

type snapshotReply struct {
	snap *chain.Snapshot
	err  error
}

func (s serialSource) Snapshot(ctx context.Context) (*chain.Snapshot, error) {
	req := snapshotRequest{ctx: ctx, reply: make(chan snapshotReply, 1)}
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, errors.New("kfm metrics is shutting down")
	}
	r := <-req.reply
	return r.snap, r.err
}

// family is a metric family as `kfm metrics --once -o json` writes it.
type family struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Help    string   `json:"help"`
	Samples []sample `json:"samples"`
}

// sample is one series: its labels and value (counter, gauge), or count and
// sum (histogram, summary).
type sample struct {
	Labels map[string]string `json:"labels"`
	Value  *float64          `json:"value,omitempty"`
	Count  *uint64           `json:"count,omitempty"`
	Sum    *float64          `json:"sum,omitempty"`
}

func familiesJSON(mfs []*dto.MetricFamily) []family {
	out := []family{}
	for _, mf := range mfs {
		f := family{Name: mf.GetName(), Type: strings.ToLower(mf.GetType().String()), Help: mf.GetHelp(), Samples: []sample{}}
		for _, m := range mf.GetMetric() {
			s := sample{Labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.Labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.Value = m.Counter.Value
			case m.Gauge != nil:
				s.Value = m.Gauge.Value
			case m.Untyped != nil:
				s.Value = m.Untyped.Value
			case m.Histogram != nil:
				s.Count, s.Sum = m.Histogram.SampleCount, m.Histogram.SampleSum
			case m.Summary != nil:
				s.Count, s.Sum = m.Summary.SampleCount, m.Summary.SampleSum
			}
			f.Samples = append(f.Samples, s)
		}
		out = append(out, f)
	}
	return out
}

// holdStats turns the kernel's BPF run statistics on for as long as the
// process lives (BPF_ENABLE_STATS: they go off again when its file
// descriptor closes, so a crashed kfm leaves nothing switched on), so that
// kfm_program_run_seconds_total and kfm_chain_run_seconds_total count.
// A kernel or sandbox that refuses it is reported once; the counters that
// kfm injects do not need it. The caller keeps the returned closer until it
// exits (nil when refused).
func holdStats(warn func(msg string, args ...any)) io.Closer {
	c, err := counters.EnableStats()
	if err != nil {
		warn("kernel run statistics stay off (BPF_ENABLE_STATS refused): run counts and times are not exported", "error", err)
		return nil
	}
	return c
}
