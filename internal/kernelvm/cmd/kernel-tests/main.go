// Command kernel-tests runs kfm's kernel-VM test suites: `make test-kernels`.
//
// It boots Debian's 5.10, 6.1 and 6.12 cloud kernels under qemu (TCG) with an
// initramfs holding the test binaries of internal/kernelvm/suites.go, prints
// one summary line per kernel and the output of every failing test, and
// exits 1 when anything failed. See internal/kernelvm's package
// documentation.
//
// Usage:
//
//	go run ./internal/kernelvm/cmd/kernel-tests [flags]
//
// Environment: KERNELS selects kernels ("6.12", "5.10,6.1"); KFM_VM_SHELL=1
// is -shell; KFM_DEBIAN_MIRROR replaces the Debian mirror.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kfm-project/kfm/internal/kernelvm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kernel-tests", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kernels  = fs.String("kernels", os.Getenv("KERNELS"), "kernels to boot, by version prefix: \"6.12\", \"5.10,6.1\" (default: $KERNELS, else all)")
		suites   = fs.String("suites", "", "run only the suites whose package matches this regexp")
		runExpr  = fs.String("run", "", "replace every suite's -test.run expression")
		parallel = fs.Int("parallel", 2, "VMs to run at once (two measured fastest on 2 cores)")
		timeout  = fs.Duration("timeout", 0, "hard limit per VM (default: 3m plus the suites' timeouts)")
		memory   = fs.Int("mem", 2048, "guest memory in MiB")
		cpus     = fs.Int("smp", 2, "guest CPUs")
		cache    = fs.String("cache", "", "kernel cache directory (default: ~/.cache/kfm/kernels)")
		work     = fs.String("work", "", "work directory for test binaries and initramfs (default: a temporary one)")
		keep     = fs.Bool("keep", false, "keep the work directory (console logs, initramfs)")
		refresh  = fs.Bool("refresh", false, "download the kernels again even when cached")
		noPVH    = fs.Bool("no-pvh", false, "boot the compressed bzImage instead of the extracted vmlinux (PVH)")
		shell    = fs.Bool("shell", os.Getenv("KFM_VM_SHELL") == "1", "boot the first selected kernel with an interactive shell instead of running tests ($KFM_VM_SHELL=1)")
		verbose  = fs.Bool("v", false, "stream every console line")
		suiteTO  = fs.Duration("test-timeout", 0, "replace every suite's -test.timeout (and raise the VM's limit with it)")
		env      envFlag
	)
	fs.Var(&env, "env", "KEY=VALUE for every suite's test binary (repeatable), e.g. -env KFM_TRAFFIC_CHANGES=1000")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kernel-tests: unexpected arguments %q\n", fs.Args())
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "kernel-tests: %v\n", err)
		if errors.Is(err, kernelvm.ErrNoMatch) {
			return 2
		}
		return 1
	}

	root, err := moduleRoot(ctx)
	if err != nil {
		return fail(err)
	}
	if *cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return fail(fmt.Errorf("kernel cache: %w (use -cache)", err))
		}
		*cache = filepath.Join(dir, "kfm", "kernels")
	}
	ks, err := kernelvm.SelectKernels(kernelvm.DefaultKernels(), *kernels)
	if err != nil {
		return fail(err)
	}
	ss, err := kernelvm.FilterSuites(kernelvm.DefaultSuites(), *suites)
	if err != nil {
		return fail(err)
	}

	results, tm, err := kernelvm.Run(ctx, kernelvm.Options{
		ModuleRoot: root, CacheDir: *cache, WorkDir: *work, Keep: *keep,
		Kernels: ks, Suites: ss, Run: *runExpr, Env: env, SuiteTimeout: *suiteTO,
		Parallel: *parallel, MemoryMiB: *memory, CPUs: *cpus, Timeout: *timeout,
		Refresh: *refresh, NoPVH: *noPVH, Shell: *shell, Log: stderr, Verbose: *verbose,
	})
	if err != nil {
		return fail(err)
	}
	if *shell {
		return 0
	}
	kernelvm.WriteReport(stdout, results)
	fmt.Fprintf(stdout, "kernel VMs: total %.1fs (kernels %.1fs, test binaries %.1fs, initramfs %.1fs, VMs %.1fs with %d at a time)\n",
		tm.Total.Seconds(), tm.Fetch.Seconds(), tm.Build.Seconds(), tm.Initramfs.Seconds(), tm.Tests.Seconds(), min(*parallel, len(results)))
	for _, r := range results {
		if r.Failed() {
			return 1
		}
	}
	return 0
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the kfm module: run from the repository (make test-kernels)")
	}
	return filepath.Dir(mod), nil
}

// envFlag collects repeated -env KEY=VALUE flags.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }

func (e *envFlag) Set(v string) error {
	if err := kernelvm.ValidateEnv([]string{v}); err != nil {
		return err
	}
	*e = append(*e, v)
	return nil
}
