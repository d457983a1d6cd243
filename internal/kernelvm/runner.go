package kernelvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Options configure a run of the kernel-VM tests.
type Options struct {
	ModuleRoot string       // directory of go.mod
	CacheDir   string       // kernel cache, e.g. ~/.cache/kfm/kernels
	WorkDir    string       // test binaries and initramfs; a temporary directory when empty
	Keep       bool         // keep WorkDir (it is removed otherwise)
	Kernels    []KernelSpec // kernels to boot
	Suites     []Suite      // suites to run (filtered per kernel by Suite.Kernels)
	Modules    []string     // kernel modules to load
	Run        string       // when set, replaces every suite's Run expression
	Env        []string     // KEY=VALUE added to every suite's environment
	// SuiteTimeout, when set, replaces every suite's Timeout.
	SuiteTimeout time.Duration
	Parallel     int // VMs at once; 1 when zero
	MemoryMiB    int // guest memory; 2048 when zero
	CPUs         int // guest CPUs; 2 when zero
	Timeout      time.Duration
	Refresh      bool // download kernels even when cached
	NoPVH        bool // boot the bzImage, not the extracted vmlinux
	Shell        bool // boot the first kernel with an interactive shell instead
	// Log receives progress messages and, when Verbose, every console
	// line; nil discards them.
	Log     io.Writer
	Verbose bool
}

// KernelResult is the outcome of one kernel's VM.
type KernelResult struct {
	Spec     KernelSpec
	Kernel   *Kernel
	Expected []string // names of the suites the VM was to run
	Console  *Console
	Elapsed  time.Duration // qemu start to exit
	Err      error         // setup failure, qemu failure or timeout
}

// Boot is the time from starting qemu to the init script's ready marker.
func (r *KernelResult) Boot() time.Duration {
	if r.Console == nil || !r.Console.Ready {
		return 0
	}
	return r.Console.ReadyAt.Sub(r.Console.Start)
}

// Problems lists everything that makes this kernel's run a failure.
func (r *KernelResult) Problems() []string {
	var p []string
	if r.Err != nil {
		p = append(p, r.Err.Error())
	}
	if r.Console != nil {
		p = append(p, r.Console.Problems(r.Expected)...)
	} else if r.Err == nil {
		p = append(p, "the VM did not run")
	}
	return p
}

// Failed reports whether the kernel's run failed.
func (r *KernelResult) Failed() bool { return len(r.Problems()) > 0 }

// Timings are the durations of the phases of a run.
type Timings struct {
	Fetch, Build, Initramfs, Tests, Total time.Duration
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// Run fetches the kernels, builds the test binaries once, builds one
// initramfs per kernel and boots the VMs, Parallel at a time. It returns one
// result per kernel; the error is for failures before any VM could run.
func Run(ctx context.Context, o Options) ([]*KernelResult, Timings, error) {
	var tm Timings
	start := time.Now()
	if o.Parallel <= 0 {
		o.Parallel = 1
	}
	if o.MemoryMiB <= 0 {
		o.MemoryMiB = 2048
	}
	if o.CPUs <= 0 {
		o.CPUs = 2
	}
	if len(o.Modules) == 0 {
		o.Modules = DefaultModules()
	}
	// Suites are checked against every known kernel, not only the selected
	// ones: a suite for 6.12 is fine when KERNELS=5.10.
	known := append(DefaultKernels(), o.Kernels...)
	if err := ValidateSuites(o.Suites, known); err != nil {
		return nil, tm, fmt.Errorf("suite list (internal/kernelvm/suites.go): %w", err)
	}
	if err := ValidateEnv(o.Env); err != nil {
		return nil, tm, err
	}
	if o.Run != "" || len(o.Env) > 0 || o.SuiteTimeout > 0 {
		suites := make([]Suite, len(o.Suites))
		for i, s := range o.Suites {
			if o.Run != "" {
				s.Run = o.Run
			}
			if o.SuiteTimeout > 0 {
				s.Timeout = o.SuiteTimeout
			}
			s.Env = append(slices.Clone(s.Env), o.Env...)
			suites[i] = s
		}
		o.Suites = suites
	}
	if o.Shell {
		o.Kernels = o.Kernels[:1]
	}

	// The suites of each kernel; kernels without any are not booted.
	type plan struct {
		spec   KernelSpec
		suites []kernelSuite
	}
	var plans []plan
	packages := map[string][]string{} // package -> extra files
	var pkgList []string
	for _, k := range o.Kernels {
		var ks []kernelSuite
		for _, s := range SuitesFor(o.Suites, k) {
			ks = append(ks, kernelSuite{Suite: s, Name: s.Package})
			if _, ok := packages[s.Package]; !ok {
				pkgList = append(pkgList, s.Package)
			}
			packages[s.Package] = append(packages[s.Package], s.Files...)
		}
		if len(ks) == 0 && !o.Shell {
			o.logf("kernel %s: no suite applies; not booted", k.Name)
			continue
		}
		plans = append(plans, plan{spec: k, suites: ks})
	}
	if len(plans) == 0 {
		return nil, tm, fmt.Errorf("no suite applies to the selected kernels: %w", ErrNoMatch)
	}

	work := o.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "kfm-kernelvm-"); err != nil {
			return nil, tm, err
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, tm, err
	}
	if o.Keep {
		o.logf("work directory: %s (kept)", work)
	} else {
		defer os.RemoveAll(work)
	}

	// Fetching kernels (network) and building the test binaries (CPU)
	// overlap.
	kernels := make([]*Kernel, len(plans))
	var fetchErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.Now()
		f := &Fetcher{Dir: o.CacheDir, Refresh: o.Refresh, Log: o.Log}
		for i, p := range plans {
			k, err := f.Fetch(ctx, p.spec)
			if err != nil {
				fetchErr = err
				return
			}
			kernels[i] = k
		}
		tm.Fetch = time.Since(t)
	}()
	t := time.Now()
	tests, buildErr := buildTests(ctx, o.ModuleRoot, filepath.Join(work, "tests"), pkgList)
	for i := range tests {
		tests[i].Files = packages[tests[i].Package]
	}
	tm.Build = time.Since(t)
	if buildErr == nil {
		o.logf("built %d test binaries (%s) in %.1fs", len(tests), strings.Join(pkgList, ", "), tm.Build.Seconds())
	}
	wg.Wait()
	if err := errors.Join(buildErr, fetchErr); err != nil {
		return nil, tm, err
	}

	t = time.Now()
	common := filepath.Join(work, "common.cpio")
	err := writeFileAtomic(common, func(w io.Writer) error {
		return WriteCommon(w, CommonImage{ModuleRoot: o.ModuleRoot, Tests: tests})
	})
	if err != nil {
		return nil, tm, fmt.Errorf("initramfs: %w", err)
	}
	images := make([]string, len(plans))
	for i, p := range plans {
		images[i] = filepath.Join(work, "initramfs-"+p.spec.Name+".cpio")
		err := writeFileAtomic(images[i], func(w io.Writer) error {
			f, err := os.Open(common)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(w, f); err != nil {
				return err
			}
			return WriteKernelPart(ctx, w, kernels[i], o.Modules, p.suites)
		})
		if err != nil {
			return nil, tm, fmt.Errorf("initramfs for kernel %s: %w", p.spec.Name, err)
		}
	}
	tm.Initramfs = time.Since(t)
	if st, err := os.Stat(images[0]); err == nil {
		o.logf("initramfs: %d MiB per kernel, built in %.1fs", st.Size()>>20, tm.Initramfs.Seconds())
	}

	vmFor := func(i int) VM {
		timeout := o.Timeout
		if timeout == 0 {
			timeout = 3 * time.Minute // boot and init
			for _, s := range plans[i].suites {
				if s.Timeout > 0 {
					timeout += s.Timeout
				} else {
					timeout += DefaultSuiteTimeout
				}
			}
		}
		image := kernels[i].BootImage()
		if o.NoPVH {
			image = kernels[i].Vmlinuz()
		}
		return VM{Kernel: image, Initramfs: images[i], MemoryMiB: o.MemoryMiB, CPUs: o.CPUs, Timeout: timeout, Shell: o.Shell, BootLog: o.Verbose}
	}

	if o.Shell {
		vm := vmFor(0)
		vm.Timeout = 0
		o.logf("kernel %s: booting %s with a shell on this terminal (Ctrl-A X quits)", plans[0].spec.Name, kernels[0].Release)
		return nil, tm, vm.Run(ctx, nil)
	}

	t = time.Now()
	results := make([]*KernelResult, len(plans))
	sem := make(chan struct{}, o.Parallel)
	var logMu sync.Mutex
	for i, p := range plans {
		sem <- struct{}{} // boot in list order
		o.logf("kernel %s: booting %s (%d suites)", p.spec.Name, kernels[i].Release, len(p.suites))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := &KernelResult{Spec: p.spec, Kernel: kernels[i]}
			for _, s := range p.suites {
				r.Expected = append(r.Expected, s.Name)
			}
			results[i] = r
			logPath := filepath.Join(work, "console-"+p.spec.Name+".log")
			logFile, err := os.Create(logPath)
			if err != nil {
				r.Err = err
				return
			}
			defer logFile.Close()
			vmStart := time.Now()
			r.Console = NewConsole(vmStart)
			r.Err = vmFor(i).Run(ctx, func(at time.Time, line string) {
				fmt.Fprint(logFile, line)
				r.Console.Line(at, line)
				if o.Verbose && o.Log != nil {
					logMu.Lock()
					fmt.Fprintf(o.Log, "[%s] %s\n", p.spec.Name, strings.TrimRight(line, "\r\n"))
					logMu.Unlock()
				}
			})
			r.Elapsed = time.Since(vmStart)
		}()
	}
	wg.Wait()
	tm.Tests = time.Since(t)
	tm.Total = time.Since(start)
	return results, tm, nil
}

// buildTests compiles one static test binary per package into dir.
func buildTests(ctx context.Context, moduleRoot, dir string, pkgs []string) ([]TestBinary, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	goTool := "go"
	if gr := os.Getenv("GOROOT"); gr != "" {
		if p := filepath.Join(gr, "bin", "go"); fileExists(p) {
			goTool = p
		}
	}
	var out []TestBinary
	for _, pkg := range pkgs {
		bin := filepath.Join(dir, binaryName(pkg))
		cmd := exec.CommandContext(ctx, goTool, "test", "-c", "-o", bin, "./"+pkg)
		cmd.Dir = moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go test -c ./%s: %w\n%s", pkg, err, strings.TrimSpace(stderr.String()))
		}
		if !fileExists(bin) {
			return nil, fmt.Errorf("go test -c ./%s wrote no binary: the package has no tests (%s)", pkg, strings.TrimSpace(stderr.String()))
		}
		out = append(out, TestBinary{Package: pkg, Path: bin})
	}
	return out, nil
}
