// Command kfm is a package manager for eBPF programs: it publishes programs
// as signed OCI artifacts, pulls and verifies them, and composes them into
// chains on XDP and TC hooks. See README.md.
//
// The command layer is thin: it turns flags into calls of the chain,
// registry, verify and bpf packages and prints their results as text or, with
// -o json, as JSON.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

// softMemoryLimit is the Go runtime's soft memory limit for a kfm command
// unless GOMEMLIMIT sets another. kfm is a short-lived command whose live
// heap stays small (tens of MiB at 300 chains x 5 programs) while an apply
// produces much short-lived garbage (YAML and JSON documents, ELF copies,
// verifier logs); with Go's default GC pacing that garbage doubled the peak
// RSS (90-107 MiB at 300 x 5, `make bench-scale`). At 40 MiB the applies
// at 300 x 5 peaked at 65-68 MiB (kfm-core's own pages are about 20 MiB of
// that); at 32 MiB they peak at about 60 MiB for about 10% more CPU. It is
// soft: a command that needs more gets more, the GC just runs more often
// (and never takes more than about half the CPU).
const softMemoryLimit = 32 << 20

// serverMemoryLimitBytes is the soft memory limit of the commands that keep
// running and serve (kfm agent, kfm metrics) unless GOMEMLIMIT sets
// another: they read every chain at every scrape, and 32 MiB made the GC
// take a third of a scrape at 300 x 5 (BenchmarkScrape: 313 ms and 49 MiB
// resident at 32 MiB, 245 ms and 56 MiB at 40 MiB, 200 ms and 66 MiB at 64).
const serverMemoryLimitBytes = 40 << 20

// serverMemoryLimit sets serverMemoryLimitBytes unless GOMEMLIMIT is set.
func serverMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(serverMemoryLimitBytes)
	}
}

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(softMemoryLimit)
	}
	stopProfile := startProfile(os.Getenv("KFM_CPUPROFILE"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stop()
	stopProfile()
	os.Exit(code)
}

// startProfile writes a CPU profile of the command to file when file is
// not empty (KFM_CPUPROFILE, for kfm's developers: go tool pprof
// bin/kfm-core FILE) and returns the function that ends it.
func startProfile(file string) (stop func()) {
	if file == "" {
		return func() {}
	}
	f, err := os.Create(file)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kfm: KFM_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
