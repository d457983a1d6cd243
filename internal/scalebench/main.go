// Command scalebench is what `make bench-scale` runs: kfm at the scale of a
// big host, measured as a user runs it (issue 11).
//
// It builds a network namespace holding N veth pairs (N = 300 by default,
// -n or BENCH_SCALE_N), starts a CNCF Distribution registry inside it,
// publishes five signed sample programs with kfm publish --sign, writes a
// policy.yaml trusting the key and a kfm.yaml with one XDP chain of those
// five programs on one end of every pair (the tailcall backend, which this
// host's sandbox allows), and runs, each as its own kfm process:
//
//	cold apply          kfm apply, empty cache (pull, verify, lock, load)
//	no-op apply         kfm apply --locked, nothing to change
//	status              kfm status
//	change every chain  kfm apply after kfm.yaml reordered every chain
//	teardown            kfm apply with no chains left
//
// and prints the wall time of each and its peak RSS (ru_maxrss from
// wait4). Everything it creates (namespace, links, pins, bpffs mount,
// registry, temporary files) is removed at the end, also on failure or
// Ctrl-C. It needs root.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/progenv"
	"github.com/kfm-project/kfm/internal/testregistry"
)

func main() {
	n := 300
	if s := os.Getenv("BENCH_SCALE_N"); s != "" {
		if v, err := strconv.Atoi(s); err == nil {
			n = v
		}
	}
	kfmBin := flag.String("kfm", "bin/kfm", "the kfm binary to measure")
	flag.IntVar(&n, "n", n, "interfaces (veth pairs), one chain of five programs each")
	byHand := flag.Bool("byhand", false, "instead: install+remove of one signed program from a cold cache, kfm vs oras pull + cosign verify + xdp-loader load/unload, median of -rounds")
	flag.IntVar(&rounds, "rounds", rounds, "rounds of -byhand")
	flag.Parse()
	if *byHand {
		n = 0
	}
	os.Exit(run(*kfmBin, n))
}

// programs are the five programs of every chain, in priority order.
var programs = []struct{ obj, name string }{
	{"examples/programs/xdp_ratelimit.o", "ratelimit"},
	{"examples/programs/xdp_icmpdrop.o", "icmpdrop"},
	{"examples/programs/xdp_portfilter.o", "portfilter"},
	{"internal/testprogs/xdp_pass.o", "pass"},
	{"examples/programs/xdp_count.o", "count"},
}

type bench struct {
	*progenv.Env
	ctx   context.Context
	kfm   string
	pair  *netns.Pair
	bpffs string
	conf  string
	// state is kfm's state directory: on tmpfs, as kfm's default
	// (/run/kfm) is, since it describes kernel objects that a reboot
	// discards.
	state string
	reg   string
	pub   string
	n     int
	// digests are the published bundles' digests, by program name.
	digests map[string]string
}

// result is one measured kfm run.
type result struct {
	what   string
	wall   time.Duration
	cpu    time.Duration
	maxRSS int64 // bytes
}

// rounds is how often -byhand runs each sequence.
var rounds = 10

func run(kfmBin string, n int) (code int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-scale: kfm changes network hooks: run it as root")
		return 1
	}
	abs, err := filepath.Abs(kfmBin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		return 1
	}
	if _, err := os.Stat(abs); err != nil {
		fmt.Fprintf(os.Stderr, "bench-scale: %s not found: run make build first\n", kfmBin)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "kfm-bench-scale-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		return 1
	}
	e := progenv.New("bench-scale", dir)
	e.Cleanup(func() { os.RemoveAll(dir) })
	b := &bench{Env: e, ctx: ctx, kfm: abs, n: n}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(progenv.Failure)
			if !ok {
				panic(r)
			}
			fmt.Fprintf(os.Stderr, "bench-scale: %s\n", f.Msg)
			code = 1
		}
		// Chains first (an apply with no chains), then the rest.
		if b.conf != "" {
			os.WriteFile(filepath.Join(b.conf, "kfm.yaml"), []byte("version: 1\nchains: []\n"), 0o644)
			b.kfmRun("cleanup", "apply")
		}
		e.Close()
	}()
	b.setup()
	if n == 0 {
		b.compare(rounds)
		return 0
	}
	results := b.measure()
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "%d chains x %d programs (xdp, tailcall)\twall\tcpu\tpeak RSS\t\n", n, len(programs))
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%.0f ms\t%.0f ms\t%.1f MiB\t\n", r.what, ms(r.wall), ms(r.cpu), float64(r.maxRSS)/(1<<20))
	}
	w.Flush()
	return 0
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (b *bench) setup() {
	start := time.Now()
	b.pair = netns.NewPair(b.Env)
	b.bpffs = filepath.Join(b.Dir(), "bpffs")
	if err := os.Mkdir(b.bpffs, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := unix.Mount("bpf", b.bpffs, "bpf", 0, "mode=0700"); err != nil {
		b.Fatalf("mount bpffs: %v", err)
	}
	b.Cleanup(func() { unix.Unmount(b.bpffs, unix.MNT_DETACH) })
	state, err := os.MkdirTemp("/run", "kfm-bench-state-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(state) })
	b.state = state
	b.conf = filepath.Join(b.Dir(), "etc-kfm")
	if err := os.MkdirAll(b.conf, 0o755); err != nil {
		b.Fatal(err)
	}

	// N veth pairs inside the namespace (they go with it).
	var batch bytes.Buffer
	for i := range b.n {
		fmt.Fprintf(&batch, "link add sa%d type veth peer name sb%d\nlink set sa%d up\nlink set sb%d up\n", i, i, i, i)
	}
	cmd := exec.CommandContext(b.ctx, "ip", "-n", b.pair.B.Name, "-batch", "-")
	cmd.Stdin = &batch
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("create %d veth pairs: %v: %s", b.n, err, out)
	}

	var ln net.Listener
	if err := b.pair.B.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.reg = testregistry.Start(b.Env, testregistry.Options{Listener: ln}).Host()

	key := filepath.Join(b.Dir(), "bench")
	b.mustKFM("generate-key-pair", "--output-key-prefix", key)
	b.digests = map[string]string{}
	for _, p := range programs {
		out, err := b.kfmOutput("publish", p.obj, b.ref(p.name), "--sign", "--key", key+".key", "-o", "json")
		if err != nil {
			b.Fatalf("publish %s: %v", p.obj, err)
		}
		var res struct{ Digest string }
		if err := json.Unmarshal(out, &res); err != nil || res.Digest == "" {
			b.Fatalf("publish %s -o json: %v: %s", p.obj, err, out)
		}
		b.digests[p.name] = res.Digest
	}
	policy := fmt.Sprintf("version: 1\nrules:\n  - match: %s/bench/*\n    keys: [%s.pub]\n", b.reg, key)
	if err := os.WriteFile(filepath.Join(b.conf, "policy.yaml"), []byte(policy), 0o644); err != nil {
		b.Fatal(err)
	}
	b.pub = key + ".pub"
	fmt.Printf("set up %d veth pairs, a registry and %d signed programs in %.1fs\n", b.n, len(programs), time.Since(start).Seconds())
}

func (b *bench) ref(name string) string { return b.reg + "/bench/" + name + ":1.0.0" }

// manifest is kfm.yaml with every chain; reversed puts the programs in
// the opposite order (every chain changes).
func (b *bench) manifest(reversed bool) string {
	var s strings.Builder
	s.WriteString("version: 1\nchains:\n")
	for i := range b.n {
		fmt.Fprintf(&s, "  - interface: sa%d\n    hook: xdp\n    backend: tailcall\n    programs:\n", i)
		for j, p := range programs {
			prio := 10 * (j + 1)
			if reversed {
				prio = 10 * (len(programs) - j)
			}
			fmt.Fprintf(&s, "      - {name: %s, ref: %q, priority: %d}\n", p.name, b.ref(p.name), prio)
		}
	}
	return s.String()
}

func (b *bench) writeManifest(text string) {
	if err := os.WriteFile(filepath.Join(b.conf, "kfm.yaml"), []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
}

func (b *bench) measure() []result {
	var out []result
	step := func(what string, args ...string) {
		r, err := b.kfmRun(what, args...)
		if err != nil {
			b.Fatalf("%s (kfm %s): %v", what, strings.Join(args, " "), err)
		}
		out = append(out, r)
	}
	b.writeManifest(b.manifest(false))
	step("cold apply", "apply")
	step("no-op apply --locked", "apply", "--locked")
	step("status", "status")
	if f := os.Getenv("BENCH_SCALE_PAUSE"); f != "" {
		// For profiling by hand: the chains stay up until f exists.
		fmt.Printf("paused until %s exists; namespace %s, environment:\n  %s\n", f, b.pair.B.Path(), strings.Join(b.kfmEnv(), "\n  "))
		for {
			if _, err := os.Stat(f); err == nil || b.ctx.Err() != nil {
				break
			}
			time.Sleep(time.Second)
		}
	}
	b.writeManifest(b.manifest(true))
	step("change every chain", "apply")
	b.writeManifest("version: 1\nchains: []\n")
	step("teardown", "apply")
	return out
}

func (b *bench) mustKFM(args ...string) {
	if _, err := b.kfmRun("", args...); err != nil {
		b.Fatalf("kfm %s: %v", strings.Join(args, " "), err)
	}
}

// kfmOutput runs kfm inside the namespace and returns its standard output.
func (b *bench) kfmOutput(args ...string) ([]byte, error) {
	cmd := exec.CommandContext(b.ctx, "nsenter", append([]string{"--net=" + b.pair.B.Path(), b.kfm}, args...)...)
	cmd.Env = append(os.Environ(), b.kfmEnv()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, lastLines(stderr.String(), 5))
	}
	return out, nil
}

func (b *bench) kfmEnv() []string {
	return []string{
		"KFM_CONFIG_DIR=" + b.conf,
		"KFM_STATE_DIR=" + b.state,
		"KFM_CACHE_DIR=" + filepath.Join(b.Dir(), "cache"),
		"KFM_BPFFS=" + b.bpffs,
		"KFM_PASSWORD=bench",
		"DOCKER_CONFIG=" + filepath.Join(b.Dir(), "docker"),
	}
}

// kfmRun runs kfm inside the namespace (nsenter execs kfm itself, so the
// rusage wait4 returns is kfm's).
func (b *bench) kfmRun(what string, args ...string) (result, error) {
	cmd := exec.CommandContext(b.ctx, "nsenter", append([]string{"--net=" + b.pair.B.Path(), b.kfm}, args...)...)
	cmd.Env = append(os.Environ(), b.kfmEnv()...)
	var outBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	start := time.Now()
	err := cmd.Run()
	r := result{what: what, wall: time.Since(start)}
	if cmd.ProcessState != nil {
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		r.maxRSS = ru.Maxrss << 10
		r.cpu = time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
	}
	if err != nil {
		return r, fmt.Errorf("%w: %s", err, lastLines(outBuf.String(), 5))
	}
	return r, nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
