package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kfm-project/kfm/internal/testenv"
)

// Server is a running Prometheus.
type Server struct {
	// URL is the server's base URL (http://127.0.0.1:PORT).
	URL    string
	t      testing.TB
	mu     sync.Mutex
	output bytes.Buffer
}

// Options configure Start.
type Options struct {
	// ScrapeInterval defaults to 1 s.
	ScrapeInterval time.Duration
}

// Start runs Prometheus scraping target ("host:port", path /metrics) and
// waits until it is ready. It skips (or fails under KFM_REQUIRE_TOOLS=1)
// when the prometheus binary is missing.
func Start(t testing.TB, target string, opts *Options) *Server {
	t.Helper()
	bin := testenv.RequireTool(t, "prometheus")
	interval := time.Second
	if opts != nil && opts.ScrapeInterval > 0 {
		interval = opts.ScrapeInterval
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: %s
  scrape_timeout: %s
  evaluation_interval: %s
scrape_configs:
  - job_name: kfm
    static_configs:
      - targets: [%q]
`, interval, interval, interval, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s := &Server{URL: "http://127.0.0.1:" + strconv.Itoa(port), t: t}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		"--web.console.templates="+filepath.Join(dir, "none"),
		"--web.console.libraries="+filepath.Join(dir, "none"),
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = &lockedWriter{s}, &lockedWriter{s}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-done:
			t.Fatalf("prometheus exited: %s", s.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 60 s: %s", s.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type lockedWriter struct{ s *Server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.output.Write(p)
}

// Output is what Prometheus logged so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String()
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Sample is one series of an instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query evaluates expr at the current time over the HTTP API
// (/api/v1/query) and returns the instant vector it gives.
func (s *Server) Query(ctx context.Context, expr string) ([]Sample, error) {
	u := s.URL + "/api/v1/query?" + url.Values{"query": {expr}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", expr, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: result type %s, want vector", expr, body.Data.ResultType)
	}
	var out []Sample
	for _, r := range body.Data.Result {
		str, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", expr, r.Value[1], err)
		}
		out = append(out, Sample{Labels: r.Metric, Value: v})
	}
	return out, nil
}

// WaitFor queries expr until it returns exactly one sample whose value
// satisfies ok, or timeout passes; it returns the last samples seen.
func (s *Server) WaitFor(ctx context.Context, expr string, timeout time.Duration, ok func(float64) bool) ([]Sample, error) {
	deadline := time.Now().Add(timeout)
	var last []Sample
	var lastErr error
	for {
		last, lastErr = s.Query(ctx, expr)
		if lastErr == nil && len(last) == 1 && ok(last[0].Value) {
			return last, nil
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return last, lastErr
			}
			return last, fmt.Errorf("query %s: after %s: %s", expr, timeout, describe(last))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func describe(ss []Sample) string {
	if len(ss) == 0 {
		return "no samples"
	}
	var parts []string
	for _, s := range ss {
		parts = append(parts, fmt.Sprintf("%v=%g", s.Labels, s.Value))
	}
	return strings.Join(parts, "; ")
}

// Targets reports the health of the scrape targets (/api/v1/targets):
// "up", "down" or "unknown" per scrape URL, with the last error.
func (s *Server) Targets(ctx context.Context) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/targets", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, tg := range body.Data.ActiveTargets {
		out[tg.ScrapeURL] = strings.TrimSpace(tg.Health + " " + tg.LastError)
	}
	return out, nil
}
