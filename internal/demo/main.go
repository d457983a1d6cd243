// Command demo is what `make demo` runs: a short, real tour of kfm.
//
// It starts a CNCF Distribution registry, makes a signing key and a trust
// policy, publishes and signs three sample programs, builds two network
// namespaces joined by a veth pair, installs xdp_ratelimit -> xdp_portfilter
// -> xdp_count from the registry with kfm, sends traffic and shows what each
// program did, reorders and removes programs while traffic flows, and
// restores the chain from kfm.lock. Everything it creates is removed at the
// end, also on Ctrl-C.
//
// The registry listens on 127.0.0.1 inside the receiving namespace, and
// every kfm command runs there (nsenter --net), so nothing of the demo is
// visible outside its namespaces and its temporary directory.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/progenv"
	"github.com/kfm-project/kfm/internal/testregistry"
)

func main() {
	kfmBin := flag.String("kfm", "bin/kfm", "the kfm binary to demonstrate")
	flag.Parse()
	os.Exit(run(*kfmBin))
}

func run(kfmBin string) (code int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: kfm changes the kernel's network hooks: run make demo as root")
		return 1
	}
	abs, err := filepath.Abs(kfmBin)
	if err != nil || !isExecutable(abs) {
		fmt.Fprintf(os.Stderr, "demo: %s not found: run make build first\n", kfmBin)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "kfm-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	e := progenv.New("demo", dir)
	e.Cleanup(func() { os.RemoveAll(dir) })
	d := &demo{Env: e, ctx: ctx, kfm: abs, start: time.Now()}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(progenv.Failure)
			if !ok {
				panic(r)
			}
			if ctx.Err() != nil {
				fmt.Fprintln(os.Stderr, "\ndemo: interrupted; cleaning up")
				code = 130
			} else {
				fmt.Fprintf(os.Stderr, "\ndemo: %s\n", f.Msg)
				code = 1
			}
		}
		d.step("Clean up: chains, pins, namespaces, registry, temporary files")
		e.Close()
		fmt.Printf("  done in %.1fs\n", time.Since(d.start).Seconds())
	}()
	d.tour()
	return 0
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

type demo struct {
	*progenv.Env
	ctx   context.Context
	kfm   string
	start time.Time
	n     int

	pair  *netns.Pair
	bpffs string
	conf  string
	reg   string // registry host:port
}

func (d *demo) step(title string) {
	d.n++
	fmt.Printf("\n[%d] %s\n", d.n, title)
}

func (d *demo) say(format string, args ...any) {
	fmt.Printf("    "+format+"\n", args...)
}

func (d *demo) check() {
	if d.ctx.Err() != nil {
		d.Fatal("interrupted")
	}
}

// kfmCmd runs kfm inside the receiving namespace, prints the command line
// and its output, and returns the output. A failure ends the demo.
func (d *demo) kfmCmd(args ...string) string {
	out, err := d.kfmTry(true, args...)
	if err != nil {
		d.Fatalf("kfm %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (d *demo) kfmTry(show bool, args ...string) (string, error) {
	d.check()
	cmd := exec.CommandContext(d.ctx, "nsenter", append([]string{"--net=" + d.pair.B.Path(), d.kfm}, args...)...)
	cmd.Env = append(os.Environ(),
		"KFM_CONFIG_DIR="+d.conf,
		"KFM_STATE_DIR="+filepath.Join(d.Dir(), "state"),
		"KFM_CACHE_DIR="+filepath.Join(d.Dir(), "cache"),
		"KFM_BPFFS="+d.bpffs,
		"KFM_PASSWORD=demo",
		"DOCKER_CONFIG="+filepath.Join(d.Dir(), "docker"),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if show {
		fmt.Printf("    $ kfm %s\n", strings.Join(args, " "))
		for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
			if l != "" {
				fmt.Printf("      %s\n", l)
			}
		}
	}
	if err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (d *demo) tour() {
	d.step("Set up: two network namespaces joined by a veth pair, a private bpffs, a registry")
	d.pair = netns.NewPair(d.Env)
	d.bpffs = filepath.Join(d.Dir(), "bpffs")
	if err := os.Mkdir(d.bpffs, 0o700); err != nil {
		d.Fatal(err)
	}
	if err := unix.Mount("bpf", d.bpffs, "bpf", 0, "mode=0700"); err != nil {
		d.Fatalf("mount bpffs: %v", err)
	}
	d.Cleanup(func() { unix.Unmount(d.bpffs, unix.MNT_DETACH) })
	d.conf = filepath.Join(d.Dir(), "etc-kfm")
	if err := os.MkdirAll(d.conf, 0o755); err != nil {
		d.Fatal(err)
	}
	var ln net.Listener
	if err := d.pair.B.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		d.Fatal(err)
	}
	r := testregistry.Start(d.Env, testregistry.Options{Listener: ln})
	d.reg = r.Host()
	d.say("sender %s (%s) -> receiver %s (%s, interface %s)", d.pair.A.Name, d.pair.AAddr, d.pair.B.Name, d.pair.BAddr, d.pair.BIf)
	d.say("CNCF Distribution registry at %s (inside the receiver's namespace)", d.reg)
	d.say("kfm runs there too, with config %s", d.conf)

	d.step("A publisher makes a signing key and publishes three signed programs")
	key := filepath.Join(d.Dir(), "demo")
	d.kfmCmd("generate-key-pair", "--output-key-prefix", key)
	programs := []struct{ obj, repo string }{
		{"xdp_ratelimit", "xdp-ratelimit"},
		{"xdp_portfilter", "xdp-portfilter"},
		{"xdp_count", "xdp-count"},
	}
	for _, p := range programs {
		obj, err := filepath.Abs(filepath.Join("examples", "programs", p.obj+".o"))
		if err != nil {
			d.Fatal(err)
		}
		d.kfmCmd("publish", obj, d.ref(p.repo), "--sign", "--key", key+".key")
	}

	d.step("The host trusts that key for " + d.reg + "/kfm/* (policy.yaml); nothing else gets in")
	policy := fmt.Sprintf("version: 1\nrules:\n  - match: %s/kfm/*\n    keys: [%s.pub]\n", d.reg, key)
	if err := os.WriteFile(filepath.Join(d.conf, "policy.yaml"), []byte(policy), 0o644); err != nil {
		d.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(policy), "\n") {
		d.say("  %s", l)
	}

	iface := d.pair.BIf
	d.step("Install a chain on " + iface + ": rate limit, then drop port 9, then count")
	d.kfmCmd("install", d.ref("xdp-ratelimit"), "--iface", iface, "--priority", "10", "--param", "rate=1000", "--param", "burst=200")
	d.kfmCmd("install", d.ref("xdp-portfilter"), "--iface", iface, "--priority", "20", "--param", "port=9")
	d.kfmCmd("install", d.ref("xdp-count"), "--iface", iface, "--priority", "30")
	d.kfmCmd("status")

	d.step("Traffic: 600 datagrams to port 7000 at once, then 100 to port 9")
	recv := netns.Listen(d.Env, d.pair.B, d.pair.BAddr, 7000)
	send := netns.NewSender(d.Env, d.pair.A)
	if _, err := send.Send(netip.AddrPortFrom(d.pair.BAddr, 7000), 600, []byte("hello")); err != nil {
		d.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the bucket refills
	if _, err := send.Send(netip.AddrPortFrom(d.pair.BAddr, 9), 100, []byte("discard me")); err != nil {
		d.Fatal(err)
	}
	got := recv.WaitFor(600, 2*time.Second)
	c := d.counters()
	d.say("xdp_ratelimit  passed %d, dropped %d (over 1000/s with a burst of 200)", c.rlPassed, c.rlDropped)
	d.say("xdp_portfilter dropped %d datagrams to port 9", c.pfDropped)
	d.say("xdp_count      counted %d UDP datagrams, all to port 7000", c.udp)
	d.say("the receiver on port 7000 got %d: exactly what xdp_count saw", got)

	d.step("Reorder and remove programs while 2000 datagrams/s flow (nothing may be lost)")
	before := recv.Count()
	counted := c.udp
	rlDropped := c.rlDropped
	sctx, cancel := context.WithCancel(d.ctx)
	stream := send.StartStream(sctx, netip.AddrPortFrom(d.pair.BAddr, 7000), 2000)
	time.Sleep(300 * time.Millisecond)
	d.kfmCmd("install", d.ref("xdp-count"), "--iface", iface, "--priority", "5")
	d.kfmCmd("remove", "xdp_portfilter", "--iface", iface)
	d.kfmCmd("install", d.ref("xdp-portfilter"), "--iface", iface, "--priority", "20", "--param", "port=9")
	time.Sleep(300 * time.Millisecond)
	cancel()
	sent, err := stream.Wait()
	if err != nil {
		d.Fatal(err)
	}
	received := recv.WaitFor(before+sent, 2*time.Second) - before
	c = d.counters()
	dropped := c.rlDropped - rlDropped
	d.say("sent %d, received %d, dropped by the rate limiter %d, lost %d", sent, received, dropped, int64(sent)-int64(received)-int64(dropped))
	d.say("xdp_count (now first) kept its counters across the changes: %d -> %d", counted, c.udp)
	d.kfmCmd("status")

	d.step("kfm.lock pins every program by digest and signer")
	lk, err := chain.LoadLock(filepath.Join(d.conf, "kfm.lock"))
	if err != nil {
		d.Fatal(err)
	}
	for _, lc := range lk.Chains {
		for _, lp := range lc.Programs {
			d.say("%-15s %s  priority %-3d signed by key %s", lp.Name, short(lp.Digest), lp.Priority, short(lp.Signer.Key))
		}
	}
	d.say("(kfm.yaml says what the host wants; kfm.lock what exactly runs: commit both)")

	d.step("Same lock, same chain: remove everything, then kfm apply --locked")
	saved := map[string][]byte{}
	for _, f := range []string{"kfm.yaml", "kfm.lock"} {
		b, err := os.ReadFile(filepath.Join(d.conf, f))
		if err != nil {
			d.Fatal(err)
		}
		saved[f] = b
	}
	for _, name := range []string{"xdp_count", "xdp_ratelimit", "xdp_portfilter"} {
		d.kfmCmd("remove", name, "--iface", iface)
	}
	for f, b := range saved {
		if err := os.WriteFile(filepath.Join(d.conf, f), b, 0o644); err != nil {
			d.Fatal(err)
		}
	}
	d.say("(kfm.yaml and kfm.lock put back, as on a fresh host)")
	d.kfmCmd("apply", "--locked")
	d.kfmCmd("status")
	d.kfmCmd("apply", "--locked")

	d.step("Tear the chain down")
	d.kfmCmd("remove", "xdp_count", "--iface", iface)
	d.kfmCmd("remove", "xdp_ratelimit", "--iface", iface)
	d.kfmCmd("remove", "xdp_portfilter", "--iface", iface)
	if _, err := d.kfmTry(false, "status"); err != nil {
		d.Fatal(err)
	}
}

// short shortens "sha256:<hex>" for display.
func short(digest string) string {
	if len(digest) > 19 {
		return digest[:19] + "…"
	}
	return digest
}

func (d *demo) ref(repo string) string { return d.reg + "/kfm/" + repo + ":1.0.0" }

// errNoMap: a program's map is not pinned (the program is not installed).
var errNoMap = errors.New("map not pinned")
