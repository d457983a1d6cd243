//go:build !kfm_core

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	vnetns "github.com/vishvananda/netns"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/configdir"
	"github.com/kfm-project/kfm/chain/agent/kubernetes"
	"github.com/kfm-project/kfm/chain/agent/ocilock"
	kfmmetrics "github.com/kfm-project/kfm/chain/metrics"
	"github.com/kfm-project/kfm/verify"
)

type agentFlags struct {
	chain      chainFlags
	source     string
	listen     string
	nodeIP     string
	drift      time.Duration
	poll       time.Duration
	logFormat  string
	logLevel   string
	nodeName   string
	kubeconfig string
	retryMin   time.Duration
	retryMax   time.Duration
	pollMax    time.Duration
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
		RunE: func(cmd *cobra.Command, args []string) error {
			serverMemoryLimit()
			return g.runAgent(cmd.Context(), &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.source, "source", "", "desired state: a config directory, oci://REGISTRY/REPO:TAG (a lock pushed with kfm lock --push), or kubernetes")
	fl.StringVar(&f.listen, "listen", "", "address for /healthz, /readyz and /metrics (e.g. :9465; empty: none)")
	fl.StringVar(&f.nodeName, "node-name", envOr("KFM_NODE_NAME", os.Getenv(kubernetes.EnvNodeName)), "kubernetes source: this node's name (env KFM_NODE_NAME or NODE_NAME)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubernetes source: kubeconfig file (default $KUBECONFIG, else the pod's service account)")
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
	// /metrics also serves what `kfm metrics` does (chains, verdict
	// counters, run statistics, declared map metrics), read on each scrape
	// through a Manager of its own (a Manager serves one caller at a time).
	expMgr, err := g.manager(ctx, &f.chain)
	if err != nil {
		return err
	}
	// Scrapes are served from other threads: read the host in the
	// namespace the agent acts in, the calling thread's.
	ownNetns, err := vnetns.Get()
	if err != nil {
		return fmt.Errorf("agent: own network namespace: %w", err)
	}
	defer ownNetns.Close()
	reg.MustRegister(kfmmetrics.New(nsSnapshots{src: expMgr, ns: ownNetns}, nil))
	if stats := holdStats(log.Warn); stats != nil {
		defer stats.Close()
	}
	var src agent.Source
	switch {
	case f.source == "":
		return usageErrorf("--source is required: a config directory, oci://REF or kubernetes")
	case f.source == "kubernetes":
		node, err := kubernetes.NodeName(f.nodeName)
		if err != nil {
			return usageErrorf("--source kubernetes: %v (pass --node-name, or set KFM_NODE_NAME from the downward API)", err)
		}
		cfg, err := kubernetes.Config(f.kubeconfig)
		if err != nil {
			return err
		}
		if src, err = kubernetes.New(kubernetes.Options{Config: cfg, NodeName: node}); err != nil {
			return err
		}
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
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	policyPath := f.chain.policy
	if policyPath == "" {
		policyPath = filepath.Join(g.configDir, "policy.yaml")
	}
	changed := make(chan struct{})
	go func() {
		if err := watchPolicy(runCtx, policyPath, log); err == nil {
			close(changed)
			stopRun()
		}
	}()
	err = a.Run(runCtx)
	select {
	case <-changed:
		// A new trust policy: start over with it. The chains keep running
		// (a restart changes nothing that runs) and the next reconcile
		// verifies them under the new policy.
		log.Info("trust policy changed: restarting the agent to use it", "policy", policyPath)
		return fmt.Errorf("restart after the trust policy changed: %w", reexec())
	default:
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("agent stopped")
	return nil
}

// watchPolicy returns nil when the trust policy at path changes to one
// that parses; a policy that does not parse is logged and the old one
// stays. It returns ctx's error when ctx ends first, or the watch's.
func watchPolicy(ctx context.Context, path string, log *slog.Logger) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	dir := filepath.Dir(path)
	if err := w.Add(dir); err != nil {
		log.Warn("cannot watch the trust policy; restart the agent after changing it", "policy", path, "error", err)
		<-ctx.Done()
		return ctx.Err()
	}
	read := func() []byte { b, _ := os.ReadFile(path); return b }
	last := read()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-w.Errors:
			log.Warn("watch the trust policy", "error", err)
		case ev := <-w.Events:
			if base := filepath.Base(ev.Name); base == filepath.Base(path) || base == "..data" {
				settle = time.After(200 * time.Millisecond)
			}
		case <-settle:
			settle = nil
			now := read()
			if bytes.Equal(now, last) {
				continue
			}
			if _, err := verify.ParsePolicy(ctx, path, now, dir); err != nil {
				log.Error("the changed trust policy does not parse; the agent keeps the one it runs with", "policy", path, "error", err)
				last = now
				continue
			}
			return nil
		}
	}
}

// reexec replaces the process with a fresh kfm of the same command line.
// It runs on a thread other than the caller's: the caller may be locked
// into another network namespace, and the new process starts in the
// namespace of the thread that executes it.
func reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is replaced or discarded
		errc <- syscall.Exec(exe, os.Args, os.Environ())
	}()
	return <-errc
}

// nsSnapshots reads src's snapshots on a thread in the network namespace
// ns: the agent's, which its HTTP server's threads need not be in (a
// process started with only its main thread in a namespace, as the tests
// start agents, or a caller that locked its thread into one).
type nsSnapshots struct {
	src kfmmetrics.Source
	ns  vnetns.NsHandle
}

func (s nsSnapshots) Snapshot(ctx context.Context) (*chain.Snapshot, error) {
	type result struct {
		snap *chain.Snapshot
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer orig.Close()
		if err := vnetns.Set(s.ns); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter the agent's network namespace: %w", err)}
			return
		}
		snap, err := s.src.Snapshot(ctx)
		if vnetns.Set(orig) == nil {
			runtime.UnlockOSThread()
		} // else the thread dies with the goroutine
		done <- result{snap, err}
	}()
	r := <-done
	return r.snap, r.err
}
