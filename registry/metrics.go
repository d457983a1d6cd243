package registry

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/kfm-project/kfm/bpf"
)

// Metric types a publisher may declare.
const (
	MetricCounter = "counter"
	MetricGauge   = "gauge"
)

// reservedLabels are the labels kfm puts on every declared metric; a
// declaration may not use them.
var reservedLabels = []string{"interface", "hook", "position", "program", "digest", "netns"}

// MetricConfig declares a map of a program as a Prometheus metric: one
// sample per distinct combination of the labelled key fields, the value
// field summed over the other keys and, for per-CPU maps, over the CPUs.
// bundle.yaml and the bundle config write it the same way:
//
//	metrics:
//	  - name: portfilter_dropped_packets_total
//	    type: counter
//	    help: Packets dropped because of their destination port
//	    map: drops
//	    value: packets          # member of the value struct; leave out for an integer value
//	    labels:                 # from the key; leave out to sum over all keys
//	      - name: port
//	        field: port         # member of the key struct; leave out for an integer key
//
// Names follow Prometheus conventions: counters end in _total; the kfm_
// prefix is kfm's own. kfm exposes the metric under the declared name with
// the labels interface, hook, position, program and digest added.
type MetricConfig struct {
	Name   string        `json:"name" yaml:"name"`
	Type   string        `json:"type" yaml:"type"`
	Help   string        `json:"help,omitempty" yaml:"help"`
	Map    string        `json:"map" yaml:"map"`
	Value  string        `json:"value,omitempty" yaml:"value"`
	Labels []MetricLabel `json:"labels,omitempty" yaml:"labels"`
	// Extra holds unknown fields of a bundle config (never of bundle.yaml,
	// which refuses unknown keys).
	Extra map[string]json.RawMessage `json:"-" yaml:"-"`
}

// MetricLabel is a label taken from a key field.
type MetricLabel struct {
	Name string `json:"name" yaml:"name"`
	// Field is the member of the key struct; empty for an integer key.
	Field string                     `json:"field,omitempty" yaml:"field"`
	Extra map[string]json.RawMessage `json:"-" yaml:"-"`
}

// MarshalJSON: see Config.MarshalJSON.
func (m MetricConfig) MarshalJSON() ([]byte, error) {
	type plain MetricConfig
	return marshalKeep(plain(m), m.Extra)
}

// UnmarshalJSON keeps unknown fields.
func (m *MetricConfig) UnmarshalJSON(b []byte) error { return unmarshalKeep(b, m, &m.Extra) }

// MarshalJSON: see Config.MarshalJSON.
func (l MetricLabel) MarshalJSON() ([]byte, error) {
	type plain MetricLabel
	return marshalKeep(plain(l), l.Extra)
}

// UnmarshalJSON keeps unknown fields.
func (l *MetricLabel) UnmarshalJSON(b []byte) error { return unmarshalKeep(b, l, &l.Extra) }

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// check does what can be checked without the object.
func (m *MetricConfig) check() error {
	switch {
	case !metricName.MatchString(m.Name):
		return fmt.Errorf("metric name %q: use letters, digits and '_' (a Prometheus metric name)", m.Name)
	case strings.HasPrefix(m.Name, "kfm_"):
		return fmt.Errorf("metric %s: the kfm_ prefix is kfm's own metrics': name it for the program (e.g. %s)", m.Name, strings.TrimPrefix(m.Name, "kfm_"))
	case m.Type != MetricCounter && m.Type != MetricGauge:
		return fmt.Errorf("metric %s: type %q: want counter or gauge", m.Name, m.Type)
	case m.Type == MetricCounter && !strings.HasSuffix(m.Name, "_total"):
		return fmt.Errorf("metric %s: a counter's name ends in _total (Prometheus convention): %s_total", m.Name, m.Name)
	case m.Type == MetricGauge && strings.HasSuffix(m.Name, "_total"):
		return fmt.Errorf("metric %s: a gauge's name does not end in _total (that suffix says counter)", m.Name)
	case m.Map == "":
		return fmt.Errorf("metric %s: map is required", m.Name)
	}
	seen := map[string]bool{}
	for i, l := range m.Labels {
		switch {
		case !labelName.MatchString(l.Name) || strings.HasPrefix(l.Name, "__"):
			return fmt.Errorf("metric %s: labels[%d]: name %q: use letters, digits and '_', not starting with __", m.Name, i, l.Name)
		case isReserved(l.Name):
			return fmt.Errorf("metric %s: label %s is one kfm adds itself (%s): choose another name", m.Name, l.Name, strings.Join(reservedLabels, ", "))
		case seen[l.Name]:
			return fmt.Errorf("metric %s: label %s is declared twice", m.Name, l.Name)
		}
		seen[l.Name] = true
	}
	return nil
}

func isReserved(name string) bool {
	for _, r := range reservedLabels {
		if r == name {
			return true
		}
	}
	return false
}

// Layout checks the declaration against obj's BTF (the map exists, the
// fields exist and are integers) and returns where its labels and value
// lie; the key fields of the layout are in the order of m.Labels.
func (m *MetricConfig) Layout(obj *bpf.Object) (*bpf.MapLayout, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	fields := make([]string, len(m.Labels))
	for i, l := range m.Labels {
		fields[i] = l.Field
	}
	l, err := obj.MapLayout(m.Map, fields, m.Value)
	if err != nil {
		return nil, fmt.Errorf("metric %s: %w", m.Name, err)
	}
	return l, nil
}

// checkMetrics checks a program's declarations: names unique, each valid
// against the object.
func checkMetrics(obj *bpf.Object, ms []MetricConfig) error {
	seen := map[string]bool{}
	for i := range ms {
		if seen[ms[i].Name] {
			return fmt.Errorf("metric %s is declared twice", ms[i].Name)
		}
		seen[ms[i].Name] = true
		if _, err := ms[i].Layout(obj); err != nil {
			return err
		}
	}
	return nil
}
