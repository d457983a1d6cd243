package main

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/kfm-project/kfm/chain/metrics"
)

const dashboardPath = "../../manifests/grafana/kfm.json"

// dashboardExprs returns the PromQL of every panel of the Grafana
// dashboard, with its variables replaced by what matches everything.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	r := strings.NewReplacer("$interface", ".*", "$job", ".*", "$__rate_interval", "30s")
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, r.Replace(tg.Expr))
		}
	}
	if len(out) < 10 {
		t.Fatalf("%s has %d expressions", dashboardPath, len(out))
	}
	return out
}

var (
	promqlStrings  = regexp.MustCompile(`"[^"]*"`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]|\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promqlKeywords = []string{"by", "without", "offset", "bool", "and", "or", "unless", "on", "ignoring", "group_left", "group_right"}
)

// metricNames are the metric names expr refers to: identifiers that are
// neither functions, keywords nor label names.
func metricNames(expr string) []string {
	s := promqlMatchers.ReplaceAllString(promqlStrings.ReplaceAllString(expr, ""), " ")
	var out []string
	for _, m := range promqlIdent.FindAllString(s, -1) {
		if strings.HasSuffix(m, "(") || slices.Contains(promqlKeywords, m) {
			continue
		}
		out = append(out, m)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (interface, proto) (rate(count_packets_total{interface=~".*"}[30s]))`:        {"count_packets_total"},
		`histogram_quantile(0.9, sum by (le) (rate(kfm_apply_duration_seconds_bucket[1m])))`: {"kfm_apply_duration_seconds_bucket"},
		`kfm_chain_info{interface=~"a"} * on (interface) group_left kfm_chain_programs`:      {"kfm_chain_info", "kfm_chain_programs"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

// opsExposition is what an Ops registry exposes after an apply and a
// reconcile (a one-shot kfm has none: the agent feeds them).
func opsExposition(t *testing.T) string {
	t.Helper()
	ops := metrics.NewOps()
	ops.ObserveApply(30*time.Millisecond, nil)
	ops.ObserveReconcile("config-dir", 40*time.Millisecond, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(ops)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

// checkDashboard fails t for every metric the dashboard uses that the
// exposition text does not have.
func checkDashboard(t *testing.T, exposition string) {
	t.Helper()
	exposition = "\n" + exposition
	for _, expr := range dashboardExprs(t) {
		for _, name := range metricNames(expr) {
			if !strings.Contains(exposition, "\n"+name+"{") && !strings.Contains(exposition, "\n"+name+" ") {
				t.Errorf("the dashboard queries %s (in %s), which the exporter does not expose", name, expr)
			}
		}
	}
}
