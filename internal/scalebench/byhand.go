package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// compare measures, side by side in one run, what a user does to run one
// signed registry program and take it off again, from a cold cache:
//
//	kfm:     kfm install REF --iface IF; kfm remove NAME --iface IF
//	by hand: oras pull REF; cosign verify --key KEY REF@DIGEST;
//	         xdp-loader load IF OBJ; xdp-loader unload IF --all
//
// Each round starts from empty cache, config (policy.yaml only) and state
// directories (oras pulls into an empty directory); the state directory is
// on tmpfs, as kfm's default /run/kfm is. The rounds alternate,
// so both see the same machine load. xdp-loader gets the run's private
// bpffs (LIBXDP_BPFFS). On a host that refuses BPF_PROG_TYPE_EXT (this
// project's development machines) libxdp's dispatcher cannot take the
// program and xdp-loader falls back to attaching the single program
// directly, so the by-hand sequence does less kernel work than kfm, which
// builds its chain (tailcall root + program array) even for one program.
func (b *bench) compare(rounds int) {
	for _, tool := range []string{"oras", "cosign", "xdp-loader"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("-byhand needs %s on PATH (make deps installs it): %v", tool, err)
		}
	}
	obj := "examples/programs/xdp_count.o"
	ref := b.ref("count")
	digest := b.digests["count"]
	iface := b.pair.BIf
	var kfmTimes, handTimes []time.Duration
	// Each step's times, for the breakdown.
	steps := map[string][]time.Duration{}
	var order []string
	step := func(name string, run func()) {
		start := time.Now()
		run()
		if _, ok := steps[name]; !ok {
			order = append(order, name)
		}
		steps[name] = append(steps[name], time.Since(start))
	}
	for i := range rounds {
		dir := filepath.Join(b.Dir(), fmt.Sprintf("round%d", i))
		state := filepath.Join(b.state, fmt.Sprintf("round%d", i))
		for _, d := range []string{filepath.Join(dir, "cache"), filepath.Join(dir, "conf"), filepath.Join(dir, "pull"), state} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		policy, err := os.ReadFile(filepath.Join(b.conf, "policy.yaml"))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "conf", "policy.yaml"), policy, 0o644); err != nil {
			b.Fatal(err)
		}
		env := []string{
			"KFM_CONFIG_DIR=" + filepath.Join(dir, "conf"),
			"KFM_STATE_DIR=" + state,
			"KFM_CACHE_DIR=" + filepath.Join(dir, "cache"),
			"KFM_BPFFS=" + b.bpffs,
			"DOCKER_CONFIG=" + filepath.Join(b.Dir(), "docker"),
			"LIBXDP_BPFFS=" + b.bpffs,
		}
		start := time.Now()
		step("kfm install", func() { b.inNS(env, b.kfm, "install", ref, "--iface", iface, "--name", "count") })
		step("kfm remove", func() { b.inNS(env, b.kfm, "remove", "count", "--iface", iface) })
		kfmTimes = append(kfmTimes, time.Since(start))

		start = time.Now()
		step("oras pull", func() { b.inNS(env, "oras", "pull", "--plain-http", ref, "-o", filepath.Join(dir, "pull")) })
		step("cosign verify", func() {
			b.inNS(env, "cosign", "verify", "--key", b.pub, "--insecure-ignore-tlog=true", "--allow-http-registry", strings.Split(ref, ":1.0.0")[0]+"@"+digest)
		})
		step("xdp-loader load", func() { b.inNS(env, "xdp-loader", "load", iface, filepath.Join(dir, "pull", filepath.Base(obj))) })
		step("xdp-loader unload", func() { b.inNS(env, "xdp-loader", "unload", iface, "--all") })
		handTimes = append(handTimes, time.Since(start))

		// The floor of a kfm command: starting the CLI (kfm-core's
		// package initialisers), here for a command that fails at once.
		step("kfm start-up (kfm-core, no work)", func() {
			cmd := exec.CommandContext(b.ctx, "nsenter", "--net="+b.pair.B.Path(), filepath.Join(filepath.Dir(b.kfm), "kfm-core"), "version", "-o", "json")
			cmd.Env = append(os.Environ(), env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("kfm-core version: %v: %s", err, out)
			}
		})
	}
	mk, mh := median(kfmTimes), median(handTimes)
	fmt.Printf("install + remove of a signed registry program, cold cache, median of %d\n", rounds)
	fmt.Printf("  kfm install + kfm remove                                   %7.1f ms\n", ms(mk))
	fmt.Printf("  oras pull + cosign verify + xdp-loader load + unload       %7.1f ms\n", ms(mh))
	fmt.Printf("  ratio kfm / by hand                                        %7.2f (goal <= 0.5)\n", float64(mk)/float64(mh))
	fmt.Printf("each step, median\n")
	for _, name := range order {
		fmt.Printf("  %-58s %7.1f ms\n", name, ms(median(steps[name])))
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// inNS runs a command in the namespace of the managed interface and fails
// the run when it fails.
func (b *bench) inNS(env []string, name string, args ...string) {
	cmd := exec.CommandContext(b.ctx, "nsenter", append([]string{"--net=" + b.pair.B.Path(), name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, lastLines(out.String(), 5))
	}
}
