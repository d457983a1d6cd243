package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/configdir"
	"github.com/kfm-project/kfm/chain/agent/ocilock"
)

type agentFlags struct {
	chain     chainFlags
	source    string
	listen    string
	nodeIP    string
	drift     time.Duration
	poll      time.Duration
	logFormat string
	logLevel  string
	retryMin  time.Duration
	retryMax  time.Duration
	pollMax   time.Duration
}

func newAgentCommand(g *globals) *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent --source DIR|oci://REF|kubernetes",
		Short: "Run the node agent: converge this node on the chains a source asks for",
		Long: `kfm agent runs until stopped and keeps this node's chains as its source wants
them: a config directory (kfm.yaml + kfm.lock, watched), a signed lock in a
registry (oci://REF, polled), or the Kubernetes ChainSets selecting this node.
It reconciles when the source changes, when an interface appears, disappears
or is renamed, and every --drift-interval (a chain changed by hand is put
back). It only touches the hooks it installed; a restart changes nothing that
runs. --listen serves /healthz, /readyz (ready after the first complete
reconcile) and /metrics.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return g.runAgent(cmd.Context(), &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.source, "source", "", "desired state: a config directory, oci://REGISTRY/REPO:TAG (a lock pushed with kfm lock --push), or kubernetes")
	fl.StringVar(&f.listen, "listen", "", "address for /healthz, /readyz and /metrics (e.g. :9465; empty: none)")
	fl.StringVar(&f.nodeIP, "node-ip", os.Getenv("KFM_NODE_IP"), "the node's InternalIP: its interface is primaryNodeInterface (env KFM_NODE_IP)")
	fl.DurationVar(&f.drift, "drift-interval", agent.DefaultDriftInterval, "how often to check that the chains still run as wanted")
	fl.DurationVar(&f.poll, "poll-interval", ocilock.DefaultInterval, "oci:// source: how often to check the tag")
	fl.DurationVar(&f.pollMax, "poll-max-backoff", ocilock.DefaultMaxBackoff, "oci:// source: longest wait between checks while the registry fails")
	fl.DurationVar(&f.retryMin, "retry-min", agent.DefaultRetryMin, "first wait before retrying a failed apply (doubles up to --retry-max)")
	fl.DurationVar(&f.retryMax, "retry-max", agent.DefaultRetryMax, "longest wait between retries of a failed apply")
	fl.StringVar(&f.logFormat, "log-format", "json", "log format: json or text")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringVar(&f.chain.policy, "policy", "", "trust policy (default <config-dir>/policy.yaml)")
	f.chain.registry.add(cmd, true)
	return cmd
}

func (g *globals) runAgent(ctx context.Context, f *agentFlags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageErrorf("invalid --log-level %q: use debug, info, warn or error", f.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch f.logFormat {
	case "json":
		log = slog.New(slog.NewJSONHandler(g.err, hopts))
	case "text":
		log = slog.New(slog.NewTextHandler(g.err, hopts))
	default:
		return usageErrorf("invalid --log-format %q: use json or text", f.logFormat)
	}
	var nodeIP netip.Addr
	if f.nodeIP != "" {
		var err error
		if nodeIP, err = netip.ParseAddr(f.nodeIP); err != nil {
			return usageErrorf("invalid --node-ip %q: %v", f.nodeIP, err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := agent.NewMetrics(reg)

	mgr, err := g.manager(ctx, &f.chain)
	if err != nil {
		return err
	}
	var src agent.Source
	switch {
	case f.source == "":
		return usageErrorf("--source is required: a config directory, oci://REF or kubernetes")
	case f.source == "kubernetes":
		// The Kubernetes source (chain/agent/kubernetes) is wired in here
		// when it is merged.
		return usageErrorf("--source kubernetes: this build of kfm has no Kubernetes source yet; use a config directory or oci://REF")
	case strings.HasPrefix(f.source, "oci://"):
		client, err := g.registryClient(ctx, &f.chain.registry, true)
		if err != nil {
			return err
		}
		sources, err := g.sources(ctx, &f.chain)
		if err != nil {
			return err
		}
		if sources.Policy == nil {
			return fmt.Errorf("--source %s: no trust policy (%s): a lock from a registry must be signed by a signer the node's policy accepts", f.source, sources.PolicyPath)
		}
		src, err = ocilock.New(strings.TrimPrefix(f.source, "oci://"), ocilock.Options{
			Client: client, Policy: sources.Policy, Interval: f.poll, MaxBackoff: f.pollMax, Logger: log, Metrics: metrics,
		})
		if err != nil {
			return usageErrorf("--source %s: %v", f.source, err)
		}
	default:
		st, err := os.Stat(f.source)
		if err != nil || !st.IsDir() {
			return usageErrorf("--source %s: not a directory (give a config directory, oci://REF or kubernetes)", f.source)
		}
		src = configdir.New(f.source, log, metrics)
	}
	a, err := agent.New(agent.Options{
		Manager: mgr, Source: src, NodeIP: nodeIP, DriftInterval: f.drift,
		RetryMin: f.retryMin, RetryMax: f.retryMax, Logger: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	if f.listen != "" {
		ln, err := net.Listen("tcp", f.listen)
		if err != nil {
			return usageErrorf("--listen %s: %v", f.listen, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !a.Ready() {
				http.Error(w, "not ready: no complete reconcile yet", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("listening", "address", ln.Addr().String())
	}
	log.Info("agent started", "source", src.Name(), "node_ip", f.nodeIP, "drift_interval", f.drift.String())
	err = a.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("agent stopped")
	return nil
}
