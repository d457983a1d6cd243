package metrics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kfm-project/kfm/chain"
)

// Declared exposes the maps publishers declared as metrics (bundle.yaml
// `metrics`, see registry.MetricConfig), for every installed program that
// declares any. A sample carries the program labels (ProgramLabelNames) and
// the declared ones; its value is the declared value field summed over the
// CPUs of a per-CPU map and over the keys that agree on the declared
// labels. Entries of array maps whose sum is zero are left out when the
// metric has labels (an array has every key, whether the program wrote it
// or not); a metric without labels always has its one sample.
//
// Two programs that declare the same name with a different type or label
// set cannot share it: the first, in chain order, wins and the other is
// reported as an error of this collector.
//
// Cost: one open of each pinned map per scrape and one BPF_MAP_LOOKUP_BATCH
// call per 256 entries; at most MaxEntries entries per map are read.
type Declared struct {
	// MaxEntries bounds the entries read from one map (default 65536).
	MaxEntries int
}

// Name implements Collector.
func (Declared) Name() string { return "declared" }

type family struct {
	typ    string
	labels []string
	desc   *prometheus.Desc
}

// Collect implements Collector.
func (d Declared) Collect(ctx context.Context, s *chain.Snapshot, ch chan<- prometheus.Metric) error {
	limit := d.MaxEntries
	if limit <= 0 {
		limit = 1 << 16
	}
	families := map[string]*family{}
	var errs []error
	for i := range s.Hooks {
		h := &s.Hooks[i]
		for j := range h.Programs {
			p := &h.Programs[j]
			if p.MapDir == "" || len(p.Metrics) == 0 {
				continue
			}
			if err := d.program(ctx, h, p, families, limit, ch); err != nil {
				errs = append(errs, fmt.Errorf("%s %s %s: %w", h.Interface, h.Hook, p.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (d Declared) program(ctx context.Context, h *chain.HookSnapshot, p *chain.ProgramSnapshot, families map[string]*family, limit int, ch chan<- prometheus.Metric) error {
	var errs []error
	open := map[string]*ebpf.Map{}
	var releases []func()
	defer func() {
		for _, release := range releases {
			release()
		}
	}()
	base := ProgramLabels(h, p)
	for _, dm := range p.Metrics {
		f := families[dm.Name]
		if f == nil {
			vt := "gauge"
			if dm.Type == "counter" {
				vt = "counter"
			}
			help := dm.Help
			if help == "" {
				help = "Declared by the publisher of " + p.Name + " (map " + dm.Layout.Map + ")."
			}
			f = &family{typ: vt, labels: dm.Labels,
				desc: prometheus.NewDesc(dm.Name, help, append(slices.Clone(ProgramLabelNames), dm.Labels...), nil)}
			families[dm.Name] = f
		} else if f.typ != dm.Type || !slices.Equal(f.labels, dm.Labels) {
			errs = append(errs, fmt.Errorf("metric %s: declared as %s with labels [%s] by an earlier program, here as %s with labels [%s]: left out",
				dm.Name, f.typ, strings.Join(f.labels, ","), dm.Type, strings.Join(dm.Labels, ",")))
			continue
		}
		m := open[dm.Layout.Map]
		if m == nil {
			var release func()
			var err error
			m, release, err = openPinned(ctx, chain.MapPin(p.MapDir, dm.Layout.Map))
			if err != nil {
				errs = append(errs, fmt.Errorf("metric %s: open map %s: %w", dm.Name, dm.Layout.Map, err))
				continue
			}
			releases = append(releases, release)
			open[dm.Layout.Map] = m
		}
		if m.KeySize() != dm.Layout.KeySize || m.ValueSize() != dm.Layout.ValueSize {
			errs = append(errs, fmt.Errorf("metric %s: map %s has key/value sizes %d/%d, the declaration was resolved for %d/%d",
				dm.Name, dm.Layout.Map, m.KeySize(), m.ValueSize(), dm.Layout.KeySize, dm.Layout.ValueSize))
			continue
		}
		sums := map[string]float64{}
		var order []string
		_, err := walk(m, limit, func(key []byte, values [][]byte) {
			var lv []string
			for _, kf := range dm.Layout.Keys {
				v, _ := kf.Read(key)
				if kf.Signed {
					lv = append(lv, strconv.FormatInt(int64(v), 10))
				} else {
					lv = append(lv, strconv.FormatUint(v, 10))
				}
			}
			var sum float64
			for _, b := range values {
				v, _ := dm.Layout.Value.Read(b)
				if dm.Layout.Value.Signed {
					sum += float64(int64(v))
				} else {
					sum += float64(v)
				}
			}
			k := strings.Join(lv, "\x00")
			if _, ok := sums[k]; !ok {
				order = append(order, k)
			}
			sums[k] += sum
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("metric %s: %w", dm.Name, err))
			continue
		}
		array := m.Type() == ebpf.Array || m.Type() == ebpf.PerCPUArray
		if len(dm.Labels) == 0 && len(order) == 0 {
			order, sums[""] = []string{""}, 0 // an empty hash map: the sum is 0
		}
		vt := prometheus.GaugeValue
		if f.typ == "counter" {
			vt = prometheus.CounterValue
		}
		for _, k := range order {
			if array && len(dm.Labels) > 0 && sums[k] == 0 {
				continue
			}
			lv := slices.Clone(base)
			if len(dm.Labels) > 0 {
				lv = append(lv, strings.Split(k, "\x00")...)
			}
			ch <- prometheus.MustNewConstMetric(f.desc, vt, sums[k], lv...)
		}
	}
	return errors.Join(errs...)
}
