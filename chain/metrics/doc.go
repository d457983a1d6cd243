// Package metrics exports what runs on a host as Prometheus metrics: chains
// and their programs, the maps publishers declared as metrics, how full the
// hash maps of installed programs are, and counts and durations of applies
// and reconciles.
//
// An Exporter is a prometheus.Collector that reads the host on every scrape
// (chain.Manager.Snapshot: the kernel and the host state). Counters and maps
// are read afresh each time; the structure of a chain is read again only
// when the host state file or a cheap look at the hook (one netlink link
// dump per namespace) says it may have changed, so a removed program, or a
// chain detached by hand, disappears from the next scrape. What it
// exposes comes from a list of Collectors, each turning the snapshot into
// metrics:
//
//	ChainInfo     kfm_chain_info, kfm_chain_programs, kfm_program_info
//	Declared      the maps publishers declared in bundle.yaml (see registry.MetricConfig)
//	MapFill       kfm_map_entries, kfm_map_max_entries, kfm_map_fill_ratio
//
// Adding metrics, e.g. kfm's verdict counters, is one type with a Collect
// method added to the list given to New (or appended to DefaultCollectors):
//
//	type verdicts struct{}
//
//	func (verdicts) Name() string { return "verdicts" }
//	func (verdicts) Collect(ctx context.Context, s *chain.Snapshot, ch chan<- prometheus.Metric) error {
//		for _, h := range s.Hooks {
//			for _, p := range h.Programs {
//				// read p's counters; send with ProgramLabels(h, p)
//			}
//		}
//		return nil
//	}
//
// Ops counts applies and reconciles for long-running processes (the node
// agent); a one-shot `kfm apply` has nobody to scrape it and exposes none.
//
// Handler serves a registry over HTTP; `kfm metrics --listen` and the agent
// mount the same handler. Metric names follow Prometheus conventions: the
// kfm_ prefix, _total for counters, seconds for durations. Declared metrics
// keep the names their publishers gave (which may not start with kfm_).
package metrics
