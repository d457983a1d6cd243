package dispatcher_test

// kfm's commands on a dispatcher chain shared with xdp-loader: the chain
// package's Manager with the dispatcher backend, which is exactly what
// `kfm install`, `kfm remove` and `kfm status` run (cmd/kfm only parses
// flags and prints). In-process because the kernel VMs run test binaries
// only. Needs freplace: runs in the kernel VMs.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/bpf/tailcall"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

type kfmEnv struct {
	pair  *netns.Pair
	bpffs string
	m     *chain.Manager
}

func newKFMEnv(t *testing.T, more ...chain.Backend) *kfmEnv {
	t.Helper()
	testenv.RequireEXT(t)
	bpffs := testenv.BPFFS(t)
	m, err := chain.New(chain.Options{
		BPFFS: bpffs, StateDir: t.TempDir(), ConfigDir: t.TempDir(),
		Backends: append([]chain.Backend{dispatcher.New(nil)}, more...),
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &kfmEnv{pair: netns.NewPair(t), bpffs: bpffs, m: m}
	t.Cleanup(func() {
		// Whatever is left: xdp-loader removes dispatchers and their pins.
		_, _ = e.loaderErr("unload", e.pair.BIf, "--all")
	})
	return e
}

// install is `kfm install testdata/progs.o --function F --name N
// --priority P --proceed-on A --iface IF`.
func (e *kfmEnv) install(t *testing.T, function, name string, prio int, proceedOn string) *chain.HookStatus {
	t.Helper()
	return e.installWith(t, "", function, name, prio, proceedOn)
}

// installWith is install with --backend.
func (e *kfmEnv) installWith(t *testing.T, backend, function, name string, prio int, proceedOn string) *chain.HookStatus {
	t.Helper()
	obj, err := filepath.Abs(filepath.Join("testdata", "progs.o"))
	if err != nil {
		t.Fatal(err)
	}
	var hs *chain.HookStatus
	err = e.pair.B.Do(func() (err error) {
		hs, err = e.m.Install(context.Background(), chain.InstallRequest{
			Interface: e.pair.BIf, Source: obj, Backend: backend,
			Function: function, Name: name, Priority: &prio, ProceedOn: proceedOn,
		})
		return err
	})
	if err != nil {
		t.Fatalf("kfm install %s: %v", name, err)
	}
	return hs
}

// remove is `kfm remove NAME --iface IF`.
func (e *kfmEnv) remove(t *testing.T, name string) {
	t.Helper()
	err := e.pair.B.Do(func() error {
		_, err := e.m.Remove(context.Background(), e.pair.BIf, bpf.HookXDP, name)
		return err
	})
	if err != nil {
		t.Fatalf("kfm remove %s: %v", name, err)
	}
}

// status is `kfm status --iface IF`: the XDP hook's chain, nil if none.
func (e *kfmEnv) status(t *testing.T) *chain.HookStatus {
	t.Helper()
	var hss []chain.HookStatus
	err := e.pair.B.Do(func() (err error) {
		hss, err = e.m.Status(context.Background(), e.pair.BIf)
		return err
	})
	if err != nil {
		t.Fatalf("kfm status: %v", err)
	}
	for i := range hss {
		if hss[i].Hook == bpf.HookXDP {
			return &hss[i]
		}
	}
	return nil
}

func (e *kfmEnv) loaderErr(args ...string) (string, error) {
	bin, err := exec.LookPath("xdp-loader")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", e.pair.B.Name, bin}, args...)...)
	cmd.Env = append(os.Environ(), "LIBXDP_BPFFS="+e.bpffs)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *kfmEnv) loader(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.loaderErr(args...)
	if err != nil {
		t.Fatalf("xdp-loader %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// summary renders a status as "name/priority/proceed-on/origin" in run
// order.
func summary(hs *chain.HookStatus) []string {
	if hs == nil {
		return nil
	}
	var out []string
	for _, p := range hs.Programs {
		out = append(out, fmt.Sprintf("%s/%d/%s/%s", p.Name, p.Priority, strings.Join(p.ProceedOn, ","), p.Origin))
	}
	return out
}

// loaderLines are the component lines of `xdp-loader status IF` as
// "name/prio/actions".
func (e *kfmEnv) loaderLines(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(e.loader(t, "status", e.pair.BIf), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[0] == "=>" {
			out = append(out, f[2]+"/"+f[1]+"/"+f[5])
		}
	}
	return out
}

func expect(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// TestKFMCommandsWithXDPLoader: kfm install shows in xdp-loader status;
// xdp-loader load joins kfm's chain and kfm status shows its program with
// origin libxdp; kfm remove keeps xdp-loader's program; xdp-loader unload
// --all leaves nothing.
func TestKFMCommandsWithXDPLoader(t *testing.T) {
	e := newKFMEnv(t)
	hs := e.install(t, "count_udp_packets", "counter", 10, "pass,drop")
	if hs.Backend != dispatcher.Name {
		t.Fatalf("kfm chose backend %q (%s)", hs.Backend, hs.Reason)
	}
	e.install(t, "pass_all", "passer", 30, "pass")
	expect(t, "xdp-loader status", e.loaderLines(t), []string{"count_udp_packets/10/XDP_DROP,XDP_PASS", "pass_all/30/XDP_PASS"})

	e.loader(t, "load", e.pair.BIf, filepath.Join("testdata", "libxdp_a.o"))
	expect(t, "kfm status after xdp-loader load", summary(e.status(t)),
		[]string{"counter/10/drop,pass/kfm", "libxdp_a/15/pass/libxdp", "passer/30/pass/kfm"})

	e.remove(t, "passer")
	expect(t, "kfm status after kfm remove", summary(e.status(t)), []string{"counter/10/drop,pass/kfm", "libxdp_a/15/pass/libxdp"})
	expect(t, "xdp-loader status after kfm remove", e.loaderLines(t), []string{"count_udp_packets/10/XDP_DROP,XDP_PASS", "libxdp_a/15/XDP_PASS"})

	e.loader(t, "unload", e.pair.BIf, "--all")
	if hs := e.status(t); hs != nil && len(hs.Programs) > 0 {
		t.Fatalf("kfm status after xdp-loader unload --all: %q", summary(hs))
	}
	if entries, err := os.ReadDir(filepath.Join(e.bpffs, "xdp")); err != nil || len(entries) != 0 {
		t.Fatalf("left in bpffs/xdp: %v (%v)", entries, err)
	}
}

// TestXDPLoaderChainThenKFMCommands: after `xdp-loader load IF a.o b.o`,
// kfm install joins that chain, kfm status shows the libxdp programs with
// origin libxdp, and kfm remove takes out only kfm's program.
func TestXDPLoaderChainThenKFMCommands(t *testing.T) {
	e := newKFMEnv(t)
	e.loader(t, "load", e.pair.BIf, filepath.Join("testdata", "libxdp_a.o"), filepath.Join("testdata", "libxdp_b.o"))
	expect(t, "kfm status of xdp-loader's chain", summary(e.status(t)), []string{"libxdp_a/15/pass/libxdp", "libxdp_b/35/pass/libxdp"})

	e.install(t, "count_udp_packets", "counter", 20, "pass")
	expect(t, "kfm status after kfm install", summary(e.status(t)),
		[]string{"libxdp_a/15/pass/libxdp", "counter/20/pass/kfm", "libxdp_b/35/pass/libxdp"})
	expect(t, "xdp-loader status after kfm install", e.loaderLines(t),
		[]string{"libxdp_a/15/XDP_PASS", "count_udp_packets/20/XDP_PASS", "libxdp_b/35/XDP_PASS"})

	e.remove(t, "counter")
	expect(t, "kfm status after kfm remove", summary(e.status(t)), []string{"libxdp_a/15/pass/libxdp", "libxdp_b/35/pass/libxdp"})
}

// TestSwitchBackends: `kfm install --backend` moves a chain from the
// tail-call backend to the dispatcher and back. The dispatcher replaces the
// tail-call root atomically (PrepareOptions.Replace), the programs keep
// running in the same order, and each backend's leftovers go (Release).
func TestSwitchBackends(t *testing.T) {
	e := newKFMEnv(t, tailcall.New())
	hs := e.installWith(t, "tailcall", "count_udp_packets", "counter", 10, "pass")
	if hs.Backend != "tailcall" {
		t.Fatalf("backend %q, want tailcall", hs.Backend)
	}
	hs = e.installWith(t, "dispatcher", "pass_all", "passer", 20, "pass")
	if hs.Backend != dispatcher.Name {
		t.Fatalf("backend %q after the switch, want dispatcher", hs.Backend)
	}
	expect(t, "kfm status on the dispatcher", summary(e.status(t)), []string{"counter/10/pass/kfm", "passer/20/pass/kfm"})
	expect(t, "xdp-loader status", e.loaderLines(t), []string{"count_udp_packets/10/XDP_PASS", "pass_all/20/XDP_PASS"})
	tcTarget := bpf.Target{Interface: e.pair.BIf, Ifindex: e.pair.BIfindex, Hook: bpf.HookXDP, BPFFS: e.bpffs}
	if gens, _ := filepath.Glob(filepath.Join(tailcall.Dir(tcTarget), "*")); len(gens) != 0 {
		t.Errorf("the tail-call backend's pins left after the switch: %v", gens)
	}

	hs = e.installWith(t, "tailcall", "pass_all", "passer", 20, "pass")
	if hs.Backend != "tailcall" {
		t.Fatalf("backend %q after switching back, want tailcall", hs.Backend)
	}
	expect(t, "kfm status on the tail-call backend", summary(e.status(t)), []string{"counter/10/pass/kfm", "passer/20/pass/kfm"})
	if dirs, _ := filepath.Glob(filepath.Join(e.bpffs, "xdp", "dispatch-*")); len(dirs) != 0 {
		t.Errorf("dispatcher pins left after switching away: %v", dirs)
	}
}
