package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkStartup runs the built kfm binary as a user does: kfm version
// and kfm --help, each a fresh process, so that the figures include
// loading the binary and every package initialiser linked into it (Go
// runs all of them before main, whatever the command). The binary is
// $KFM_BIN (bin/kfm: the launcher; bin/kfm-core: the complete CLI), or
// the launcher (what make build installs as bin/kfm, see launcher/main.go)
// built into a temporary directory.
// Reported: wall time per run (ns/op) and the process's CPU time
// (cpu-ms/op, from wait4's rusage), which is steadier on a busy machine.
// Goal (issue 11): at most 10 ms for both.
//
//	go test -run '^$' -bench Startup ./cmd/kfm
//	GODEBUG=inittrace=1 bin/kfm version   # what each package's init costs
func BenchmarkStartup(b *testing.B) {
	bin := startupBinary(b)
	for _, args := range [][]string{{"version"}, {"--help"}} {
		b.Run(args[0], func(b *testing.B) {
			var cpu time.Duration
			for b.Loop() {
				c := exec.Command(bin, args...)
				if err := c.Run(); err != nil {
					b.Fatalf("kfm %s: %v", args[0], err)
				}
				ru := c.ProcessState.SysUsage().(*syscall.Rusage)
				cpu += time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// startupBinary is $KFM_BIN or bin/kfm (the launcher) built as make build
// builds it.
func startupBinary(b *testing.B) string {
	if bin := os.Getenv("KFM_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(b.TempDir(), "kfm")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./launcher")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build kfm: %v\n%s", err, out)
	}
	return bin
}
