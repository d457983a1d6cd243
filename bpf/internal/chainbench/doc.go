// Package chainbench holds the data-path benchmarks of kfm's chain
// backends (tailcall, tcx, tc), side by side with a single program doing
// the same work. It has no code of its own: see bench_test.go.
//
//	go test -run '^$' -bench . ./bpf/internal/chainbench/
package chainbench
