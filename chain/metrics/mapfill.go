package metrics

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kfm-project/kfm/chain"
)

// MapFill exposes how full the hash and LRU hash maps (per-CPU or not) of
// installed programs are:
//
//	kfm_map_entries{interface,hook,position,program,digest,map}
//	kfm_map_max_entries{...}
//	kfm_map_fill_ratio{...}   entries / max entries, 0..1
//
// The kernel keeps no count a user-space reader can get, so entries are
// counted by reading the map with BPF_MAP_LOOKUP_BATCH, 256 entries per
// system call (keys and values are copied out: about (key size + value
// size × CPUs) × 256 bytes per call). A map of N entries costs N/256 calls;
// maps with more than MaxEntries entries (default 1<<20) are counted up to
// that bound and reported as that many. An LRU map at 100% is working as
// designed (it evicts); a hash map at 100% refuses new keys.
type MapFill struct {
	MaxEntries int
}

var (
	mapLabelNames     = append(slices.Clone(ProgramLabelNames), "map")
	mapEntriesDesc    = prometheus.NewDesc("kfm_map_entries", "Entries in a hash map of an installed program.", mapLabelNames, nil)
	mapMaxEntriesDesc = prometheus.NewDesc("kfm_map_max_entries", "Capacity of a hash map of an installed program.", mapLabelNames, nil)
	mapFillDesc       = prometheus.NewDesc("kfm_map_fill_ratio", "Entries divided by capacity of a hash map of an installed program (0 to 1).", mapLabelNames, nil)
)

// Name implements Collector.
func (MapFill) Name() string { return "mapfill" }

// Collect implements Collector.
func (f MapFill) Collect(ctx context.Context, s *chain.Snapshot, ch chan<- prometheus.Metric) error {
	limit := f.MaxEntries
	if limit <= 0 {
		limit = 1 << 20
	}
	var errs []error
	for i := range s.Hooks {
		h := &s.Hooks[i]
		for j := range h.Programs {
			p := &h.Programs[j]
			if p.MapDir == "" {
				continue
			}
			entries, err := os.ReadDir(p.MapDir)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s %s: %w", h.Interface, h.Hook, p.Name, err))
				continue
			}
			for _, e := range entries {
				if err := fill(ctx, h, p, e.Name(), limit, ch); err != nil {
					errs = append(errs, fmt.Errorf("%s %s %s: %w", h.Interface, h.Hook, p.Name, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func fill(ctx context.Context, h *chain.HookSnapshot, p *chain.ProgramSnapshot, pin string, limit int, ch chan<- prometheus.Metric) error {
	m, release, err := openPinned(ctx, p.MapDir+"/"+pin)
	if err != nil {
		return fmt.Errorf("open map %s: %w", pin, err)
	}
	defer release()
	switch m.Type() {
	case ebpf.Hash, ebpf.LRUHash, ebpf.PerCPUHash, ebpf.LRUCPUHash:
	default:
		return nil
	}
	n, err := walk(m, min(limit, int(m.MaxEntries())), func([]byte, [][]byte) {})
	if err != nil {
		return err
	}
	// Pins spell "." as "_" (.bss -> _bss); hash maps have plain names.
	lv := append(ProgramLabels(h, p), strings.TrimSpace(pin))
	ch <- prometheus.MustNewConstMetric(mapEntriesDesc, prometheus.GaugeValue, float64(n), lv...)
	ch <- prometheus.MustNewConstMetric(mapMaxEntriesDesc, prometheus.GaugeValue, float64(m.MaxEntries()), lv...)
	ratio := 0.0
	if m.MaxEntries() > 0 {
		ratio = float64(n) / float64(m.MaxEntries())
	}
	ch <- prometheus.MustNewConstMetric(mapFillDesc, prometheus.GaugeValue, ratio, lv...)
	return nil
}
