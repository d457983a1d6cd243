package chain

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry"
)

// Metric is a map a program's publisher declared as a Prometheus metric
// (registry.MetricConfig), resolved against the program's object at
// install and kept in the host state, so that an exporter reads the pinned
// map without the object.
type Metric struct {
	Name string `json:"name"`
	// Type is "counter" or "gauge".
	Type string `json:"type"`
	Help string `json:"help,omitempty"`
	// Labels name the key fields of Layout.Keys, in the same order.
	Labels []string      `json:"labels,omitempty"`
	Layout bpf.MapLayout `json:"layout"`
}

// resolveMetrics resolves declarations against obj. A declaration this kfm
// cannot use (a type a newer kfm added, a field that is not there) is left
// out with a warning: metrics are for display, never a reason to refuse a
// program the trust policy accepted.
func resolveMetrics(obj *bpf.Object, decls []registry.MetricConfig, warn func(string)) []Metric {
	var out []Metric
	for i := range decls {
		d := &decls[i]
		l, err := d.Layout(obj)
		if err != nil {
			if warn != nil {
				warn(fmt.Sprintf("%s: declared metric left out: %v", obj.Name(), err))
			}
			continue
		}
		m := Metric{Name: d.Name, Type: d.Type, Help: d.Help, Layout: *l}
		for _, lb := range d.Labels {
			m.Labels = append(m.Labels, lb.Name)
		}
		out = append(out, m)
	}
	return out
}

// BundleFileFor is where a local object's metadata lives: X.bundle.yaml
// beside X.o (the same file `kfm publish --bundle` reads). A local install
// takes the object's metric declarations from it.
func BundleFileFor(objectPath string) string {
	return strings.TrimSuffix(objectPath, filepath.Ext(objectPath)) + ".bundle.yaml"
}

// localDeclarations reads the metric declarations of function from the
// bundle.yaml beside a local object; none when there is no such file. A
// file that is there but does not parse, or declares metrics the object
// does not have, is an error: its author is the one installing.
func localDeclarations(obj *bpf.Object, objectPath, function string) ([]Metric, error) {
	path := BundleFileFor(objectPath)
	bf, err := registry.ReadBundleFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, p := range bf.Programs {
		if p.Function != function {
			continue
		}
		for i := range p.Metrics {
			if _, err := p.Metrics[i].Layout(obj); err != nil {
				return nil, fmt.Errorf("%s: program %s: %w", path, function, err)
			}
		}
		return resolveMetrics(obj, p.Metrics, nil), nil
	}
	return nil, nil
}

// bundleDeclarations resolves the metric declarations of function in a
// pulled bundle's config.
func bundleDeclarations(obj *bpf.Object, cfg *registry.Config, function string, warn func(string)) []Metric {
	if cfg == nil {
		return nil
	}
	p, err := cfg.Program(function)
	if err != nil {
		return nil
	}
	return resolveMetrics(obj, p.Metrics, warn)
}
