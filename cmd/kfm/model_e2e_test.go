package main

// TestModel is kfm's model-based randomized test (issue 14). A seeded
// random sequence of steps changes chains on the hooks of three
// interfaces (veth ends in two network namespaces the test creates, two in
// one, addressed with --netns as for containers) with every backend the host
// has (tailcall on XDP; tailcall, tcx and tc on the TC hooks): kfm install of a
// new program or a replacement, kfm remove, an update to another version (a
// new digest, for one program new code), a reorder (a new priority), kfm
// apply of an edited kfm.yaml (several hooks at once, backend switches,
// whole chains dropped; sometimes kfm lock then apply --locked), any of
// these killed with SIGKILL after a random delay, and two kfm processes at
// once (two changes that commute; with a short --lock-timeout exit 5, busy,
// is allowed and the model drops that change). kfm is the real binary,
// built once by the test (KFM_BIN=path uses a built one; in a kernel VM,
// without a Go toolchain, the test binary runs as kfm), run as a process;
// programs come signed from an in-process registry (CNCF Distribution)
// through the trust policy. TestModelDispatcher does the same with the
// dispatcher backend in the 6.12 kernel VM (internal/kernelvm/suites.go).
//
// The model is what each hook should run: backend and programs (name,
// repository, version, priority, params). After every step four views must
// equal it:
//
//   - kfm status -o json: per hook the backend, the programs in run order
//     with their digests, functions, priorities and params, no drift;
//   - the kernel, read without kfm's code: the program attached with
//     netlink (XDP), the TCX links (link.QueryPrograms) and the cls_bpf
//     filters of each hook, and for tail-call chains the root's head and
//     chain PROG_ARRAYs followed slot by slot: the backend the kernel runs,
//     program IDs and tags in run order (equal to status), program names
//     (the functions);
//   - the pins under the test's bpffs, against the layout each backend
//     documents;
//   - kfm.yaml.
//
// Nothing may leak: the programs reachable from the pins and the hooks are
// exactly those of the chains, no program anywhere in the kernel uses one
// of the test's maps beyond them, and at the end, after everything is
// removed, no pin is left and no program, map or link the test ever saw
// still exists. After a kill, kfm apply (apply --locked when the killed
// command was one) must bring every hook to the state before or the state
// after the killed change, the same side for all hooks, with nothing of the
// killed process left.
//
// Reproduction: a failing step prints the seed, the steps so far and the
// command to run them again (go test -run 'TestModel$' ./cmd/kfm -args
// -model.seed=N -model.steps=M; or KFM_MODEL_SEED / KFM_MODEL_STEPS). A
// seed fixes the sequence of operations; where a kill lands (before or after
// the change) and whether a concurrent process found the lock busy depend on
// timing, and the steps after such a step follow what happened.
// `make soak` runs KFM_MODEL_STEPS (default 10000) steps.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testregistry"
)

var (
	modelSeedFlag  = flag.Uint64("model.seed", 0, "TestModel: the seed (0: KFM_MODEL_SEED, else random)")
	modelStepsFlag = flag.Int("model.steps", 0, "TestModel: how many steps (0: KFM_MODEL_STEPS, else 30)")
)

// defaultModelSteps bounds TestModel in make test (about a minute on the
// shared 2-core machine), defaultModelStepsVM TestModelDispatcher in a
// kernel VM.
const (
	defaultModelSteps   = 30
	defaultModelStepsVM = 12
)

// ---- the programs ----

// mVersion is one published version of a repository.
type mVersion struct {
	obj, function, digest string
	// maps are the pin names of the object's state maps: every map but
	// .rodata*, .kconfig, .ksyms and program arrays (README: maps pinned
	// under <bpffs>/kfm/maps/), with dots written as underscores.
	maps []string
}

// mRepo is a repository of the test registry.
type mRepo struct {
	name     string // e.g. xdp/count
	short    string // prefix of element names
	hookType string // "xdp" or "tc"
	params   map[string][]string
	versions map[string]*mVersion
}

var modelVersions = []string{"1.0.0", "1.1.0"}

// modelRepos are the programs of the test. Both versions of a repository
// carry the same object, so an update changes the digest only, except
// xdp/pass, whose 1.1.0 is other code (xdp_drop).
func modelRepos() []*mRepo {
	v := func(a, b string) map[string]*mVersion {
		return map[string]*mVersion{"1.0.0": {obj: a}, "1.1.0": {obj: b}}
	}
	return []*mRepo{
		{name: "xdp/count", short: "count", hookType: "xdp", versions: v(samplesDir+"xdp_count.o", samplesDir+"xdp_count.o")},
		{name: "xdp/ratelimit", short: "rl", hookType: "xdp", versions: v(samplesDir+"xdp_ratelimit.o", samplesDir+"xdp_ratelimit.o"),
			params: map[string][]string{"rate": {"100", "5000"}, "burst": {"10"}}},
		{name: "xdp/portfilter", short: "pf", hookType: "xdp", versions: v(samplesDir+"xdp_portfilter.o", samplesDir+"xdp_portfilter.o"),
			params: map[string][]string{"port": {"7777", "53"}}},
		{name: "xdp/pass", short: "xp", hookType: "xdp", versions: v(testprogDir+"xdp_pass.o", testprogDir+"xdp_drop.o")},
		{name: "tc/count", short: "tcc", hookType: "tc", versions: v(samplesDir+"tc_count.o", samplesDir+"tc_count.o")},
		{name: "tc/mark", short: "mark", hookType: "tc", versions: v(samplesDir+"tc_mark.o", samplesDir+"tc_mark.o"),
			params: map[string][]string{"mark": {"7", "42"}}},
		{name: "tc/pass", short: "tp", hookType: "tc", versions: v(testprogDir+"tc_pass.o", testprogDir+"tc_pass.o")},
	}
}

var modelHooks = []string{"xdp", "tc-ingress", "tc-egress"}

func hookType(hook string) string {
	if hook == "xdp" {
		return "xdp"
	}
	return "tc"
}

// modelBackends are the backends a run uses per hook type, and what auto
// picks for a new chain.
type modelBackends struct {
	use  map[string][]string
	auto map[string]string
}

// hostBackends: the host refuses freplace, so no dispatcher.
var hostBackends = modelBackends{
	use:  map[string][]string{"xdp": {"tailcall"}, "tc": {"tailcall", "tcx", "tc"}},
	auto: map[string]string{"xdp": "tailcall", "tc": "tcx"},
}

// vmBackends: a kernel VM (6.12) has them all; auto picks the dispatcher.
var vmBackends = modelBackends{
	use:  map[string][]string{"xdp": {"dispatcher", "tailcall"}, "tc": {"tailcall", "tcx", "tc"}},
	auto: map[string]string{"xdp": "dispatcher", "tc": "tcx"},
}

// ---- the model ----

// mElem is one program of a chain.
type mElem struct {
	Name, Repo, Version string
	Priority            int
	Params              map[string]string
}

// hookID names a hook of one of the test's interfaces.
type hookID struct {
	Iface int
	Hook  string
}

// mChain is the chain of one hook; a hook without programs is not in the
// model.
type mChain struct {
	Backend string
	Elems   []mElem
}

type mState map[hookID]mChain

func (s mState) clone() mState {
	out := mState{}
	for h, c := range s {
		c.Elems = slices.Clone(c.Elems)
		out[h] = c
	}
	return out
}

// ordered is the run order: priority, then name.
func (c mChain) ordered() []mElem {
	out := slices.Clone(c.Elems)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Priority != out[j].Priority {
			return out[i].Priority < out[j].Priority
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func (s mState) hooks() []hookID {
	hs := slices.Collect(maps.Keys(s))
	sort.Slice(hs, func(i, j int) bool {
		if hs[i].Iface != hs[j].Iface {
			return hs[i].Iface < hs[j].Iface
		}
		return hs[i].Hook < hs[j].Hook
	})
	return hs
}

func (e mElem) String() string {
	s := fmt.Sprintf("%s=%s:%s@%d", e.Name, e.Repo, e.Version, e.Priority)
	for _, k := range slices.Sorted(maps.Keys(e.Params)) {
		s += fmt.Sprintf(",%s=%s", k, e.Params[k])
	}
	return s
}

func (s mState) String() string {
	var parts []string
	for _, h := range s.hooks() {
		c := s[h]
		var es []string
		for _, e := range c.ordered() {
			es = append(es, e.String())
		}
		parts = append(parts, fmt.Sprintf("if%d/%s[%s]: %s", h.Iface, h.Hook, c.Backend, strings.Join(es, " ")))
	}
	if len(parts) == 0 {
		return "(empty)"
	}
	return strings.Join(parts, "; ")
}

func (s mState) equal(o mState) bool { return s.String() == o.String() }

// install is the model of kfm install (add, or replace the element of the
// same name) with --backend flag: auto keeps a chain's backend and picks
// the default for a new chain.
func (s mState) install(h hookID, e mElem, backend, auto string) mState {
	s = s.clone()
	c := s[h]
	switch {
	case backend != "auto":
		c.Backend = backend
	case len(c.Elems) == 0:
		c.Backend = auto
	}
	if i := slices.IndexFunc(c.Elems, func(x mElem) bool { return x.Name == e.Name }); i >= 0 {
		c.Elems[i] = e
	} else {
		c.Elems = append(c.Elems, e)
	}
	s[h] = c
	return s
}

func (s mState) remove(h hookID, name string) mState {
	s = s.clone()
	c := s[h]
	c.Elems = slices.DeleteFunc(c.Elems, func(x mElem) bool { return x.Name == name })
	if len(c.Elems) == 0 {
		delete(s, h)
	} else {
		s[h] = c
	}
	return s
}

// ---- the world ----

// mIface is one interface the test manages.
type mIface struct {
	name    string
	ns      *netns.Namespace
	netns   string // --netns value ("" for kfm's own namespace)
	ifindex int
	// cookieDir is the directory of the namespace's pins: "ns-" and the
	// namespace's cookie (SO_NETNS_COOKIE).
	cookieDir string
}

type modelWorld struct {
	t         *testing.T
	bin       string
	ifaces    []mIface
	bpffs     string
	configDir string
	stateDir  string
	reg       *testregistry.Registry
	repos     map[string]*mRepo
	rng       *rand.Rand
	nameSeq   int
	backends  modelBackends

	// Every program, map and link the test saw, to check at the end that
	// none is left.
	seenProgs map[ebpf.ProgramID]string
	seenMaps  map[ebpf.MapID]string
	seenLinks map[link.ID]bool
	ourMaps   map[ebpf.MapID]bool // maps pinned under <bpffs>/kfm

	// took is a running estimate of how long each kind of command takes
	// (the range of the random kill delay).
	took map[string]time.Duration
	// counts of what happened; perBackend counts, per backend, the
	// chains checked after each step.
	kills, killsMissed, busy, concurrent, commands int
	perBackend                                     map[string]int
}

// modelBinary returns the kfm binary: KFM_BIN, else one built now.
func modelBinary(t *testing.T) string {
	if b := os.Getenv("KFM_BIN"); b != "" {
		abs, err := filepath.Abs(b)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		// No toolchain (a kernel VM): this test binary runs as kfm
		// (TestMain hands its arguments to main's run).
		t.Logf("no go command to build kfm (%v): the test binary runs as kfm", err)
		return ""
	}
	out := filepath.Join(t.TempDir(), "kfm")
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build kfm: %v\n%s", err, b)
	}
	return out
}

func newModelWorld(t *testing.T, seed uint64, backends modelBackends) *modelWorld {
	testenv.RequirePrivileged(t)
	w := &modelWorld{
		t:          t,
		backends:   backends,
		rng:        rand.New(rand.NewPCG(seed, seed^0x6b666d)),
		repos:      map[string]*mRepo{},
		seenProgs:  map[ebpf.ProgramID]string{},
		seenMaps:   map[ebpf.MapID]string{},
		seenLinks:  map[link.ID]bool{},
		ourMaps:    map[ebpf.MapID]bool{},
		took:       map[string]time.Duration{},
		perBackend: map[string]int{},
	}
	cliEnv(t)
	w.configDir, w.stateDir = os.Getenv("KFM_CONFIG_DIR"), os.Getenv("KFM_STATE_DIR")
	w.bpffs = testenv.BPFFS(t)
	t.Setenv("KFM_BPFFS", w.bpffs)
	w.bin = modelBinary(t)

	// Interfaces: the B ends of two veth pairs, and one end of a third
	// veth pair inside the first B namespace: two namespaces, one with two
	// interfaces.
	p1, p2 := netns.NewPair(t), netns.NewPair(t)
	extra, peer := "kfx"+p1.BIf[3:], "kfy"+p1.BIf[3:]
	var extraIdx int
	err := p1.B.Do(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: extra}, PeerName: peer}); err != nil {
			return err
		}
		for _, n := range []string{extra, peer} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
			if n == extra {
				extraIdx = l.Attrs().Index
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("veth %s/%s: %v", extra, peer, err)
	}
	w.ifaces = []mIface{
		{name: p1.BIf, ns: p1.B, netns: p1.B.Path(), ifindex: p1.BIfindex},
		{name: extra, ns: p1.B, netns: p1.B.Path(), ifindex: extraIdx},
		{name: p2.BIf, ns: p2.B, netns: p2.B.Path(), ifindex: p2.BIfindex},
	}

	for i := range w.ifaces {
		f := &w.ifaces[i]
		err := f.ns.Do(func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
			f.cookieDir = "ns-" + strconv.FormatUint(c, 10)
			return err
		})
		if err != nil {
			t.Fatalf("netns cookie of %s: %v", f.ns.Name, err)
		}
	}

	// The registry: every repository at both versions, signed with a key
	// the policy trusts.
	w.reg = testregistry.Start(t, testregistry.Options{})
	key, pub := keyPair(t, "model-password")
	policy := fmt.Sprintf("version: 1\nrules:\n  - match: '%s/**'\n    keys: [%s]\n", w.reg.Host(), pub)
	if err := os.WriteFile(filepath.Join(w.configDir, "policy.yaml"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, r := range modelRepos() {
		w.repos[r.name] = r
		for _, ver := range modelVersions {
			v := r.versions[ver]
			args := []string{"publish", v.obj, w.reg.Ref(r.name, ver), "--sign", "--key", key, "--version", ver, "-o", "json"}
			out, stderr, code := kfm(t, "", args...)
			if code != exitOK {
				t.Fatalf("kfm %s: exit %d: %s", strings.Join(args, " "), code, stderr)
			}
			var res publishResult
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("publish -o json: %v: %s", err, out)
			}
			v.digest = res.Digest
			v.function = strings.TrimSuffix(filepath.Base(v.obj), ".o")
			spec, err := ebpf.LoadCollectionSpec(v.obj)
			if err != nil {
				t.Fatal(err)
			}
			for name, ms := range spec.Maps {
				if strings.HasPrefix(name, ".rodata") || name == ".kconfig" || strings.HasPrefix(name, ".ksyms") || ms.Type == ebpf.ProgramArray {
					continue
				}
				v.maps = append(v.maps, strings.ReplaceAll(name, ".", "_"))
			}
		}
	}
	return w
}

// ---- running kfm ----

// start starts the kfm binary (in the test's network namespace, where the
// registry listens; the interfaces are in others, named with --netns).
func (w *modelWorld) start(args ...string) *proc {
	bin, env := w.bin, os.Environ()
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			w.t.Fatal(err)
		}
		bin, env = exe, append(env, asKFMEnv+"="+stayInNetns)
	}
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.commands++
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p
}

// result waits for p: its exit code, or -1 when SIGKILL ended it.
func (w *modelWorld) result(p *proc) int {
	select {
	case <-p.done:
	case <-time.After(3 * time.Minute):
		p.cmd.Process.Kill()
		<-p.done
		return -2
	}
	if ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// run runs kfm to its end and records how long the kind of command took.
func (w *modelWorld) run(args ...string) (code int, out, stderr string) {
	begin := time.Now()
	p := w.start(args...)
	code = w.result(p)
	if code == exitOK {
		w.note(args[0], time.Since(begin))
	}
	return code, p.stdout.String(), p.stderr.String()
}

func (w *modelWorld) note(kind string, d time.Duration) {
	if old, ok := w.took[kind]; ok {
		w.took[kind] = (3*old + d) / 4
	} else {
		w.took[kind] = d
	}
}

// ---- steps ----

// mOp is one change: the kfm commands that make it (run in order; the last
// is the one killed or run concurrently), kfm.yaml to write first (apply),
// and its model.
type mOp struct {
	desc     string
	manifest string
	cmds     [][]string
	model    func(mState) mState
}

func (w *modelWorld) hookArgs(h hookID) []string {
	args := []string{"--iface", w.ifaces[h.Iface].name, "--hook", h.Hook}
	if ns := w.ifaces[h.Iface].netns; ns != "" {
		args = append(args, "--netns", ns)
	}
	return args
}

func (w *modelWorld) installOp(verb string, h hookID, e mElem, backend string) mOp {
	args := []string{"install", w.reg.Ref(e.Repo, e.Version), "--name", e.Name, "--priority", strconv.Itoa(e.Priority), "--backend", backend}
	args = append(args, w.hookArgs(h)...)
	for _, k := range slices.Sorted(maps.Keys(e.Params)) {
		args = append(args, "--param", k+"="+e.Params[k])
	}
	return mOp{
		desc:  fmt.Sprintf("%s if%d/%s %s backend=%s", verb, h.Iface, h.Hook, e, backend),
		cmds:  [][]string{args},
		model: func(s mState) mState { return s.install(h, e, backend, w.backends.auto[hookType(h.Hook)]) },
	}
}

func (w *modelWorld) removeOp(h hookID, name string) mOp {
	return mOp{
		desc:  fmt.Sprintf("remove if%d/%s %s", h.Iface, h.Hook, name),
		cmds:  [][]string{append([]string{"remove", name}, w.hookArgs(h)...)},
		model: func(s mState) mState { return s.remove(h, name) },
	}
}

func (w *modelWorld) pick(n int) int { return w.rng.IntN(n) }

// modelMaxChain bounds the programs the sequences put on one hook: they
// install twice as often as they remove, and a long run would otherwise
// grow a chain past what a backend takes (tcx 16, the dispatcher 10),
// which kfm refuses with an error the model does not predict. Two
// concurrent installs may add one more.
const modelMaxChain = 8

func (w *modelWorld) randomHook() hookID {
	return hookID{Iface: w.pick(len(w.ifaces)), Hook: modelHooks[w.pick(len(modelHooks))]}
}

// randomElem makes a program for hook h named name (a new name when
// empty).
func (w *modelWorld) randomElem(h hookID, name string) mElem {
	var repos []*mRepo
	for _, r := range modelRepos() {
		if r.hookType == hookType(h.Hook) {
			repos = append(repos, w.repos[r.name])
		}
	}
	r := repos[w.pick(len(repos))]
	if name == "" {
		w.nameSeq++
		name = fmt.Sprintf("%s%d", r.short, w.nameSeq)
	}
	e := mElem{Name: name, Repo: r.name, Version: modelVersions[w.pick(len(modelVersions))], Priority: 10 * (1 + w.pick(6))}
	for _, k := range slices.Sorted(maps.Keys(r.params)) {
		if w.pick(2) == 0 {
			if e.Params == nil {
				e.Params = map[string]string{}
			}
			e.Params[k] = r.params[k][w.pick(len(r.params[k]))]
		}
	}
	return e
}

// randomElemOf picks a program of s (ok false when s is empty).
func (w *modelWorld) randomElemOf(s mState) (hookID, mElem, bool) {
	hs := s.hooks()
	if len(hs) == 0 {
		return hookID{}, mElem{}, false
	}
	h := hs[w.pick(len(hs))]
	es := s[h].Elems
	return h, es[w.pick(len(es))], true
}

func (w *modelWorld) randomBackend(h hookID) string {
	bs := w.backends.use[hookType(h.Hook)]
	return bs[w.pick(len(bs))]
}

// singleOp is a change made with one kfm install or remove.
func (w *modelWorld) singleOp(s mState) mOp {
	for {
		switch k := w.pick(10); {
		case k < 4: // install a new program
			h := w.randomHook()
			if len(s[h].Elems) >= modelMaxChain {
				continue
			}
			backend := "auto"
			if len(s[h].Elems) == 0 && w.pick(3) > 0 || w.pick(5) == 0 {
				backend = w.randomBackend(h)
			}
			return w.installOp("install", h, w.randomElem(h, ""), backend)
		case k < 6: // remove
			if h, e, ok := w.randomElemOf(s); ok {
				return w.removeOp(h, e.Name)
			}
		case k < 7: // replace a program by another one of the same name
			if h, e, ok := w.randomElemOf(s); ok {
				return w.installOp("replace", h, w.randomElem(h, e.Name), "auto")
			}
		case k < 8: // update: the other version
			if h, e, ok := w.randomElemOf(s); ok {
				e.Version = modelVersions[(slices.Index(modelVersions, e.Version)+1)%len(modelVersions)]
				return w.installOp("update", h, e, "auto")
			}
		case k < 9: // reorder: a new priority
			if h, e, ok := w.randomElemOf(s); ok {
				old := e.Priority
				for e.Priority == old {
					e.Priority = 10 * (1 + w.pick(6))
				}
				return w.installOp("reorder", h, e, "auto")
			}
		default: // switch the backend of a chain
			if h, e, ok := w.randomElemOf(s); ok && len(w.backends.use[hookType(h.Hook)]) > 1 {
				b := s[h].Backend
				for b == s[h].Backend {
					b = w.randomBackend(h)
				}
				return w.installOp("switch", h, e, b)
			}
		}
	}
}

// applyOp edits kfm.yaml (one to four changes over any hooks) and applies
// it: kfm apply, or kfm lock then kfm apply --locked.
func (w *modelWorld) applyOp(s mState) mOp {
	next := s.clone()
	var what []string
	for n := 1 + w.pick(4); n > 0; n-- {
		switch k := w.pick(8); {
		case k < 3:
			h := w.randomHook()
			if len(next[h].Elems) >= modelMaxChain {
				continue
			}
			backend := "auto"
			if len(next[h].Elems) == 0 {
				backend = w.randomBackend(h)
			}
			e := w.randomElem(h, "")
			next = next.install(h, e, backend, w.backends.auto[hookType(h.Hook)])
			what = append(what, fmt.Sprintf("+if%d/%s %s", h.Iface, h.Hook, e))
		case k < 5:
			if h, e, ok := w.randomElemOf(next); ok {
				next = next.remove(h, e.Name)
				what = append(what, fmt.Sprintf("-if%d/%s %s", h.Iface, h.Hook, e.Name))
			}
		case k < 6:
			if h, e, ok := w.randomElemOf(next); ok {
				e.Version = modelVersions[(slices.Index(modelVersions, e.Version)+1)%len(modelVersions)]
				e.Priority = 10 * (1 + w.pick(6))
				next = next.install(h, e, "auto", "")
				what = append(what, fmt.Sprintf("~if%d/%s %s", h.Iface, h.Hook, e))
			}
		case k < 7:
			if h, _, ok := w.randomElemOf(next); ok {
				b := w.randomBackend(h)
				c := next[h]
				c.Backend = b
				next[h] = c
				what = append(what, fmt.Sprintf("if%d/%s backend=%s", h.Iface, h.Hook, b))
			}
		default:
			if h, _, ok := w.randomElemOf(next); ok {
				delete(next, h)
				what = append(what, fmt.Sprintf("-if%d/%s (all)", h.Iface, h.Hook))
			}
		}
	}
	op := mOp{manifest: w.manifest(next), model: func(mState) mState { return next }}
	if w.pick(2) == 0 {
		op.desc = "apply " + strings.Join(what, ", ")
		op.cmds = [][]string{{"apply"}}
	} else {
		op.desc = "lock+apply --locked " + strings.Join(what, ", ")
		op.cmds = [][]string{{"lock"}, {"apply", "--locked"}}
	}
	return op
}

// manifest is kfm.yaml for s.
func (w *modelWorld) manifest(s mState) string {
	var b strings.Builder
	b.WriteString("version: 1\nchains:")
	if len(s) == 0 {
		b.WriteString(" []")
	}
	b.WriteString("\n")
	for _, h := range s.hooks() {
		c := s[h]
		fmt.Fprintf(&b, "  - interface: %s\n", w.ifaces[h.Iface].name)
		if ns := w.ifaces[h.Iface].netns; ns != "" {
			fmt.Fprintf(&b, "    netns: %s\n", ns)
		}
		fmt.Fprintf(&b, "    hook: %s\n    backend: %s\n    programs:\n", h.Hook, c.Backend)
		for _, e := range c.Elems {
			fmt.Fprintf(&b, "      - {name: %s, ref: %q, priority: %d", e.Name, w.reg.Ref(e.Repo, e.Version), e.Priority)
			if len(e.Params) > 0 {
				var ps []string
				for _, k := range slices.Sorted(maps.Keys(e.Params)) {
					ps = append(ps, fmt.Sprintf("%s: %q", k, e.Params[k]))
				}
				fmt.Fprintf(&b, ", params: {%s}", strings.Join(ps, ", "))
			}
			b.WriteString("}\n")
		}
	}
	return b.String()
}

// ---- the views ----

// check compares every view of the host with s and returns the
// differences.
func (w *modelWorld) check(s mState) []string {
	var bad []string
	hs, err := w.statusView()
	if err != nil {
		return []string{err.Error()}
	}
	bad = append(bad, w.checkStatus(s, hs)...)
	bad = append(bad, w.checkKernel(s, hs)...)
	bad = append(bad, w.checkPins(s, hs)...)
	bad = append(bad, w.checkManifest(s)...)
	if len(bad) == 0 {
		bad = append(bad, w.checkLeaks(hs)...)
	}
	return bad
}

func (w *modelWorld) statusView() (map[hookID]chain.HookStatus, error) {
	code, out, stderr := w.run("status", "-o", "json")
	if code != exitOK {
		return nil, fmt.Errorf("kfm status -o json: exit %d: %s", code, stderr)
	}
	var list []chain.HookStatus
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("kfm status -o json: %v\n%s", err, out)
	}
	byHook := map[hookID]chain.HookStatus{}
	for _, st := range list {
		i := slices.IndexFunc(w.ifaces, func(f mIface) bool { return f.name == st.Interface })
		if i < 0 {
			return nil, fmt.Errorf("kfm status reports an interface the test does not manage: %+v", st)
		}
		byHook[hookID{i, string(st.Hook)}] = st
	}
	return byHook, nil
}

func (w *modelWorld) checkStatus(s mState, hs map[hookID]chain.HookStatus) []string {
	var bad []string
	for h, st := range hs {
		if _, ok := s[h]; !ok && len(st.Programs) > 0 {
			bad = append(bad, fmt.Sprintf("status: if%d/%s runs %d programs, the model none", h.Iface, h.Hook, len(st.Programs)))
		}
	}
	for _, h := range s.hooks() {
		c := s[h]
		st, ok := hs[h]
		if !ok {
			bad = append(bad, fmt.Sprintf("status: if%d/%s missing, want %s", h.Iface, h.Hook, c.Backend))
			continue
		}
		where := fmt.Sprintf("status if%d/%s", h.Iface, h.Hook)
		if st.Backend != c.Backend {
			bad = append(bad, fmt.Sprintf("%s: backend %s, want %s", where, st.Backend, c.Backend))
		}
		if len(st.Drift) > 0 {
			bad = append(bad, fmt.Sprintf("%s: drift %v", where, st.Drift))
		}
		if w.ifaces[h.Iface].netns != "" && st.Netns == "" {
			bad = append(bad, fmt.Sprintf("%s: no netns", where))
		}
		want := c.ordered()
		if len(st.Programs) != len(want) {
			bad = append(bad, fmt.Sprintf("%s: %d programs %v, want %d", where, len(st.Programs), statusNames(st), len(want)))
			continue
		}
		for i, e := range want {
			p := st.Programs[i]
			v := w.repos[e.Repo].versions[e.Version]
			if p.Name != e.Name || p.Priority != e.Priority || p.Digest != v.digest || p.Function != v.function || !paramsEqual(p.Params, e.Params) {
				bad = append(bad, fmt.Sprintf("%s position %d: %s prio %d digest %s fn %s params %v, want %s (digest %s fn %s)",
					where, i, p.Name, p.Priority, short(p.Digest), p.Function, p.Params, e, short(v.digest), v.function))
			}
		}
	}
	return bad
}

func statusNames(st chain.HookStatus) []string {
	var out []string
	for _, p := range st.Programs {
		out = append(out, p.Name)
	}
	return out
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// paramsEqual compares the params status shows with the model's: status
// may add the object's defaults; every param the model sets must be
// there with its value.
func paramsEqual(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// kProg is a program as the kernel shows it.
type kProg struct {
	ID   ebpf.ProgramID
	Name string
	Tag  string
}

// kHook is what the kernel runs on one hook, read without kfm's code.
type kHook struct {
	Backend string // tailcall, tcx, tc, or "" for nothing
	Root    ebpf.ProgramID
	Progs   []kProg
}

func (w *modelWorld) progInfo(id ebpf.ProgramID) (kProg, []ebpf.MapID, error) {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return kProg{}, nil, fmt.Errorf("program %d: %w", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return kProg{}, nil, err
	}
	mids, _ := info.MapIDs()
	w.seenProgs[id] = info.Name
	for _, m := range mids {
		w.seenMaps[m] = "used by " + info.Name
	}
	return kProg{ID: id, Name: info.Name, Tag: info.Tag}, mids, nil
}

// progArray finds the PROG_ARRAY among mids named name and returns its
// entries from slot 0 up to the first empty one.
func (w *modelWorld) progArray(mids []ebpf.MapID, name string) ([]ebpf.ProgramID, bool, error) {
	for _, mid := range mids {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			continue
		}
		info, err := m.Info()
		if err != nil || m.Type() != ebpf.ProgramArray || info.Name != name {
			m.Close()
			continue
		}
		var ids []ebpf.ProgramID
		for k := uint32(0); k < m.MaxEntries(); k++ {
			var id uint32
			if err := m.Lookup(k, &id); err != nil {
				break
			}
			ids = append(ids, ebpf.ProgramID(id))
		}
		m.Close()
		return ids, true, nil
	}
	return nil, false, nil
}

// tailcallChain follows a tail-call root: its head's slot 0 is the first
// program, whose chain array holds the chain in run order.
func (w *modelWorld) tailcallChain(root ebpf.ProgramID) (kHook, error) {
	k := kHook{Backend: "tailcall", Root: root}
	_, mids, err := w.progInfo(root)
	if err != nil {
		return k, err
	}
	head, ok, err := w.progArray(mids, "kfm_head")
	if err != nil || !ok || len(head) == 0 {
		return k, fmt.Errorf("tail-call root %d: no head array or an empty head (%v)", root, err)
	}
	_, mids, err = w.progInfo(head[0])
	if err != nil {
		return k, err
	}
	ids, ok, err := w.progArray(mids, "kfm_chain")
	if err != nil {
		return k, err
	}
	if !ok {
		ids = head[:1]
	}
	if len(ids) == 0 || ids[0] != head[0] {
		return k, fmt.Errorf("tail-call root %d: head slot 0 holds %d, the chain array starts with %v", root, head[0], ids)
	}
	for _, id := range ids {
		p, _, err := w.progInfo(id)
		if err != nil {
			return k, err
		}
		k.Progs = append(k.Progs, p)
	}
	return k, nil
}

// dispatcherChain reads a libxdp-protocol dispatcher: the freplace links
// whose target is the dispatcher, each program in the slot its target
// function names (prog<N>, or the dispatcher's own function for a single
// program), from the kernel's link list and the dispatcher's BTF.
func (w *modelWorld) dispatcherChain(root ebpf.ProgramID) (kHook, error) {
	k := kHook{Backend: "dispatcher", Root: root}
	p, err := ebpf.NewProgramFromID(root)
	if err != nil {
		return k, err
	}
	info, err := p.Info()
	p.Close()
	if err != nil {
		return k, err
	}
	btfID, ok := info.BTFID()
	if !ok {
		return k, fmt.Errorf("dispatcher %d has no BTF", root)
	}
	bh, err := btf.NewHandleFromID(btfID)
	if err != nil {
		return k, err
	}
	spec, err := bh.Spec(nil)
	bh.Close()
	if err != nil {
		return k, err
	}
	slots := map[int]ebpf.ProgramID{}
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		li, err := it.Link.Info()
		if err != nil || li.Type != link.TracingType {
			continue
		}
		ti := li.Tracing()
		if ti == nil || ebpf.ProgramID(ti.TargetObjectId) != root {
			continue
		}
		typ, err := spec.TypeByID(ti.TargetBtfId)
		if err != nil {
			return k, fmt.Errorf("freplace link %d: target %d: %w", li.ID, ti.TargetBtfId, err)
		}
		n := 0
		if fn := typ.TypeName(); fn != "xdp_dispatcher" {
			if n, err = strconv.Atoi(strings.TrimPrefix(fn, "prog")); err != nil {
				return k, fmt.Errorf("freplace link %d replaces %s", li.ID, fn)
			}
		}
		if old, dup := slots[n]; dup {
			return k, fmt.Errorf("dispatcher %d: two programs (%d, %d) in slot %d", root, old, li.Program, n)
		}
		slots[n] = li.Program
		w.seenLinks[li.ID] = true
	}
	if err := it.Err(); err != nil {
		return k, err
	}
	for n := range len(slots) {
		id, ok := slots[n]
		if !ok {
			return k, fmt.Errorf("dispatcher %d: slots %v, none in slot %d", root, slots, n)
		}
		p, _, err := w.progInfo(id)
		if err != nil {
			return k, err
		}
		k.Progs = append(k.Progs, p)
	}
	return k, nil
}

// kernelHook reads what runs on hook of interface i.
func (w *modelWorld) kernelHook(i int, hook string) (kHook, error) {
	f := w.ifaces[i]
	var (
		xdpID   ebpf.ProgramID
		tcx     []ebpf.ProgramID
		filters []*netlink.BpfFilter
	)
	err := f.ns.Do(func() error {
		l, err := netlink.LinkByIndex(f.ifindex)
		if err != nil {
			return err
		}
		if hook == "xdp" {
			if x := l.Attrs().Xdp; x != nil {
				xdpID = ebpf.ProgramID(x.ProgId)
			}
			return nil
		}
		at, parent := ebpf.AttachTCXIngress, uint32(netlink.HANDLE_MIN_INGRESS)
		if hook == "tc-egress" {
			at, parent = ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: f.ifindex, Attach: at})
		if err != nil {
			return fmt.Errorf("query %s: %w", at, err)
		}
		for _, p := range res.Programs {
			tcx = append(tcx, p.ID)
			if lid, ok := p.LinkID(); ok {
				w.seenLinks[lid] = true
			}
		}
		fs, err := netlink.FilterList(l, parent)
		if err != nil {
			return nil // no clsact qdisc
		}
		for _, fl := range fs {
			if bf, ok := fl.(*netlink.BpfFilter); ok {
				filters = append(filters, bf)
			}
		}
		sort.Slice(filters, func(a, b int) bool { return filters[a].Priority < filters[b].Priority })
		return nil
	})
	if err != nil {
		return kHook{}, err
	}
	switch {
	case hook == "xdp":
		if xdpID == 0 {
			return kHook{}, nil
		}
		root, _, err := w.progInfo(xdpID)
		if err != nil {
			return kHook{}, err
		}
		if root.Name == "xdp_dispatcher" {
			return w.dispatcherChain(xdpID)
		}
		return w.tailcallChain(xdpID)
	case len(tcx) > 0 && len(filters) > 0:
		return kHook{}, fmt.Errorf("both TCX programs %v and cls_bpf filters on the hook", tcx)
	case len(filters) > 0:
		var ids []ebpf.ProgramID
		for _, f := range filters {
			ids = append(ids, ebpf.ProgramID(f.Id))
		}
		return w.listChain("tc", ids)
	case len(tcx) > 0:
		return w.listChain("tcx", tcx)
	}
	return kHook{}, nil
}

// listChain reads a tcx or tc hook: kfm's gate first, then the chain; or
// a tail-call root alone.
func (w *modelWorld) listChain(backend string, ids []ebpf.ProgramID) (kHook, error) {
	first, _, err := w.progInfo(ids[0])
	if err != nil {
		return kHook{}, err
	}
	switch first.Name {
	case "kfm_tc_root":
		if len(ids) > 1 {
			return kHook{}, fmt.Errorf("tail-call root and more %s programs on the hook: %v", backend, ids)
		}
		return w.tailcallChain(ids[0])
	case "kfm_gate":
	default:
		return kHook{}, fmt.Errorf("%s hook starts with %q (id %d), not kfm's gate", backend, first.Name, first.ID)
	}
	k := kHook{Backend: backend, Root: ids[0]}
	for _, id := range ids[1:] {
		p, _, err := w.progInfo(id)
		if err != nil {
			return k, err
		}
		k.Progs = append(k.Progs, p)
	}
	return k, nil
}

// kernelName is the name the kernel keeps of a function (15 characters).
func kernelName(fn string) string {
	if len(fn) > 15 {
		return fn[:15]
	}
	return fn
}

func (w *modelWorld) checkKernel(s mState, hs map[hookID]chain.HookStatus) []string {
	var bad []string
	for i := range w.ifaces {
		for _, hook := range modelHooks {
			h := hookID{i, hook}
			where := fmt.Sprintf("kernel if%d/%s", i, hook)
			k, err := w.kernelHook(i, hook)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", where, err))
				continue
			}
			c, ok := s[h]
			if !ok {
				if k.Backend != "" {
					bad = append(bad, fmt.Sprintf("%s: runs %s %v, the model nothing", where, k.Backend, k.Progs))
				}
				continue
			}
			if k.Backend != c.Backend {
				bad = append(bad, fmt.Sprintf("%s: runs backend %q, want %s", where, k.Backend, c.Backend))
				continue
			}
			want := c.ordered()
			st := hs[h]
			if k.Root != st.RootID {
				bad = append(bad, fmt.Sprintf("%s: root/gate %d, status says %d", where, k.Root, st.RootID))
			}
			if len(k.Progs) != len(want) || len(st.Programs) != len(want) {
				bad = append(bad, fmt.Sprintf("%s: %d programs %v, want %d", where, len(k.Progs), k.Progs, len(want)))
				continue
			}
			for j, e := range want {
				fn := w.repos[e.Repo].versions[e.Version].function
				p, sp := k.Progs[j], st.Programs[j]
				if p.Name != kernelName(fn) || p.ID != sp.ProgramID || p.Tag != sp.Tag {
					bad = append(bad, fmt.Sprintf("%s position %d: kernel runs %d %s tag %s, status says %d tag %s, model %s (%s)",
						where, j, p.ID, p.Name, p.Tag, sp.ProgramID, sp.Tag, e.Name, fn))
				}
			}
		}
	}
	return bad
}

// ---- pins ----

var (
	genNRe  = regexp.MustCompile(`gen-\d+`)
	linkNRe = regexp.MustCompile(`link-\d+$`)
)

// pinList lists every pin and directory under the bpffs as "path kind",
// generation numbers written N, and records the maps and links it finds.
func (w *modelWorld) pinList() ([]string, error) {
	var out []string
	err := filepath.WalkDir(w.bpffs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == w.bpffs || preloaded(w.bpffs, path) {
			return nil
		}
		rel, _ := filepath.Rel(w.bpffs, path)
		kind := "dir"
		if !d.IsDir() {
			kind = w.pinKind(path)
		}
		rel = linkNRe.ReplaceAllString(genNRe.ReplaceAllString(rel, "gen-N"), "link-N")
		out = append(out, rel+" "+kind)
		return nil
	})
	sort.Strings(out)
	return out, err
}

func (w *modelWorld) pinKind(path string) string {
	if p, err := ebpf.LoadPinnedProgram(path, nil); err == nil {
		defer p.Close()
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				w.seenProgs[id] = info.Name
			}
		}
		return "prog"
	}
	if m, err := ebpf.LoadPinnedMap(path, nil); err == nil {
		defer m.Close()
		if info, err := m.Info(); err == nil {
			if id, ok := info.ID(); ok {
				w.seenMaps[id] = path
				if strings.HasPrefix(path, filepath.Join(w.bpffs, "kfm")+"/") {
					w.ourMaps[id] = true
				}
			}
		}
		return "map"
	}
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		defer l.Close()
		if info, err := l.Info(); err == nil {
			w.seenLinks[info.ID] = true
		}
		return "link"
	}
	return "unknown"
}

// wantPins is the pin layout of s, as each backend's documentation
// describes it (bpf/tailcall, bpf/tc, chain's map store).
func (w *modelWorld) wantPins(s mState, hs map[hookID]chain.HookStatus) []string {
	dirs := map[string]bool{}
	var out []string
	add := func(p, kind string) {
		out = append(out, p+" "+kind)
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, h := range s.hooks() {
		c := s[h]
		f := w.ifaces[h.Iface]
		idx := strconv.Itoa(f.ifindex)
		if f.netns != "" {
			idx = filepath.Join(f.cookieDir, idx)
		}
		if c.Backend == "dispatcher" {
			// libxdp's layout, the same in every namespace.
			dir := filepath.Join("xdp", fmt.Sprintf("dispatch-%d-%d", f.ifindex, hs[h].RootID))
			for n := range c.Elems {
				add(filepath.Join(dir, fmt.Sprintf("prog%d-link", n)), "link")
				add(filepath.Join(dir, fmt.Sprintf("prog%d-prog", n)), "prog")
			}
		}
		for _, p := range modelPinLayout(c.Backend, h.Hook, len(c.Elems)) {
			add(filepath.Join("kfm", c.Backend, idx, h.Hook, p[0]), p[1])
		}
		for _, e := range c.Elems {
			// kfm's verdict counters, and the program's own state.
			add(filepath.Join("kfm", "maps", idx, h.Hook, e.Name, "kfm-counters"), "map")
			for _, m := range w.repos[e.Repo].versions[e.Version].maps {
				add(filepath.Join("kfm", "maps", idx, h.Hook, e.Name, m), "map")
			}
		}
	}
	for d := range dirs {
		out = append(out, d+" dir")
	}
	sort.Strings(out)
	return out
}

// modelPinLayout is what a backend pins per hook (path, kind).
func modelPinLayout(backend, hook string, programs int) [][2]string {
	switch backend {
	case "tailcall":
		l := [][2]string{{"root", "prog"}, {"head", "map"}, {"gen-N/chain", "map"}, {"gen-N/meta", "map"}}
		if hook != "xdp" {
			l = append(l, [2]string{"root_link", "link"})
		}
		return l
	case "tcx":
		l := [][2]string{{"gate", "link"}, {"meta", "map"}}
		for range programs {
			l = append(l, [2]string{"link-N", "link"})
		}
		return l
	case "tc":
		return [][2]string{{"meta", "map"}}
	}
	return nil
}

func (w *modelWorld) checkPins(s mState, hs map[hookID]chain.HookStatus) []string {
	got, err := w.pinList()
	if err != nil {
		return []string{"pins: " + err.Error()}
	}
	want := w.wantPins(s, hs)
	if !slices.Contains(want, "xdp dir") {
		// <bpffs>/xdp is libxdp's lock directory, shared by every tool
		// of the protocol; neither libxdp nor kfm removes it.
		got = slices.DeleteFunc(got, func(p string) bool { return p == "xdp dir" })
	}
	if slices.Equal(got, want) {
		return nil
	}
	return []string{fmt.Sprintf("pins:\n    %s\n  want:\n    %s", strings.Join(got, "\n    "), strings.Join(want, "\n    "))}
}

// checkManifest compares kfm.yaml's programs with the model.
func (w *modelWorld) checkManifest(s mState) []string {
	m, err := chain.LoadManifest(filepath.Join(w.configDir, "kfm.yaml"))
	if errors.Is(err, fs.ErrNotExist) {
		m = &chain.Manifest{}
	} else if err != nil {
		return []string{"kfm.yaml: " + err.Error()}
	}
	got := mState{}
	for _, c := range m.Chains {
		i := slices.IndexFunc(w.ifaces, func(f mIface) bool { return f.name == c.Interface })
		if i < 0 {
			return []string{"kfm.yaml names interface " + c.Interface}
		}
		h := hookID{i, string(c.Hook)}
		mc := mChain{Backend: s[h].Backend}
		for _, p := range c.Programs {
			ref := strings.TrimPrefix(p.Ref, w.reg.Host()+"/")
			repo, ver, _ := strings.Cut(ref, ":")
			e := mElem{Name: p.Name, Repo: repo, Version: ver, Params: p.Params}
			if p.Priority != nil {
				e.Priority = *p.Priority
			}
			mc.Elems = append(mc.Elems, e)
		}
		if len(mc.Elems) > 0 {
			got[h] = mc
		}
	}
	if !got.equal(s) {
		return []string{fmt.Sprintf("kfm.yaml: %s\n  want %s", got, s)}
	}
	return nil
}

// reachablePrograms is every program the pins and hooks keep alive,
// following program arrays.
func (w *modelWorld) reachablePrograms() (map[ebpf.ProgramID]string, error) {
	progs := map[ebpf.ProgramID]string{}
	var queue []ebpf.ProgramID
	seenMaps := map[ebpf.MapID]bool{}
	addProg := func(id ebpf.ProgramID) {
		if _, ok := progs[id]; !ok && id != 0 {
			progs[id] = ""
			queue = append(queue, id)
		}
	}
	addMap := func(m *ebpf.Map) {
		info, err := m.Info()
		if err != nil {
			return
		}
		id, _ := info.ID()
		if seenMaps[id] || m.Type() != ebpf.ProgramArray {
			seenMaps[id] = true
			return
		}
		seenMaps[id] = true
		for k := uint32(0); k < m.MaxEntries(); k++ {
			var pid uint32
			if m.Lookup(k, &pid) == nil {
				addProg(ebpf.ProgramID(pid))
			}
		}
	}
	err := filepath.WalkDir(w.bpffs, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || preloaded(w.bpffs, path) {
			return err
		}
		if p, err := ebpf.LoadPinnedProgram(path, nil); err == nil {
			info, err := p.Info()
			p.Close()
			if err == nil {
				id, _ := info.ID()
				addProg(id)
			}
			return nil
		}
		if m, err := ebpf.LoadPinnedMap(path, nil); err == nil {
			addMap(m)
			m.Close()
			return nil
		}
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			info, err := l.Info()
			l.Close()
			if err == nil {
				addProg(info.Program)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range w.ifaces {
		for _, hook := range modelHooks {
			k, err := w.kernelHook(i, hook)
			if err != nil {
				continue // reported by checkKernel
			}
			addProg(k.Root)
			for _, p := range k.Progs {
				addProg(p.ID)
			}
		}
	}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		p, mids, err := w.progInfo(id)
		if err != nil {
			progs[id] = "gone"
			continue
		}
		progs[id] = p.Name
		for _, mid := range mids {
			if m, err := ebpf.NewMapFromID(mid); err == nil {
				addMap(m)
				m.Close()
			}
		}
	}
	return progs, nil
}

// usersOfOurMaps lists every program in the kernel that uses a map the
// test saw pinned under <bpffs>/kfm.
func (w *modelWorld) usersOfOurMaps() map[ebpf.ProgramID]string {
	out := map[ebpf.ProgramID]string{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			continue
		}
		mids, _ := info.MapIDs()
		if slices.ContainsFunc(mids, func(m ebpf.MapID) bool { return w.ourMaps[m] }) {
			out[id] = info.Name
		}
	}
}

// checkLeaks: the programs the pins and hooks keep alive, and the programs
// anywhere using the test's maps, are exactly the chains' (programs freed
// lazily get a moment).
func (w *modelWorld) checkLeaks(hs map[hookID]chain.HookStatus) []string {
	want := map[ebpf.ProgramID]string{}
	for _, st := range hs {
		if st.RootID != 0 {
			want[st.RootID] = "root"
		}
		for _, p := range st.Programs {
			want[p.ProgramID] = p.Name
		}
	}
	// (Generous: the machines running this are often heavily loaded.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		reach, err := w.reachablePrograms()
		if err != nil {
			return []string{err.Error()}
		}
		users := w.usersOfOurMaps()
		x1, x2, missing := extra(reach, want), extra(users, want), extra(want, reach)
		if len(x1)+len(x2)+len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return []string{fmt.Sprintf("leak: reachable from pins and hooks beyond the chains: %v; using the test's maps beyond the chains: %v; in status but not reachable: %v", x1, x2, missing)}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- the test ----

func modelParams(t *testing.T, defaultSteps int) (seed uint64, steps int) {
	seed, steps = *modelSeedFlag, *modelStepsFlag
	if seed == 0 {
		if v := os.Getenv("KFM_MODEL_SEED"); v != "" {
			var err error
			if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
				t.Fatalf("KFM_MODEL_SEED=%q: %v", v, err)
			}
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	if steps == 0 {
		if v := os.Getenv("KFM_MODEL_STEPS"); v != "" {
			var err error
			if steps, err = strconv.Atoi(v); err != nil {
				t.Fatalf("KFM_MODEL_STEPS=%q: %v", v, err)
			}
		}
	}
	if steps == 0 {
		steps = defaultSteps
	}
	return seed, steps
}

func TestModel(t *testing.T) {
	runModel(t, hostBackends, defaultModelSteps)
}

// TestModelDispatcher is TestModel with the dispatcher backend, in the
// kernel VMs (the host refuses freplace), with a smaller bound: the VMs
// emulate the CPU (TCG).
func TestModelDispatcher(t *testing.T) {
	testenv.RequireEXT(t)
	runModel(t, vmBackends, defaultModelStepsVM)
}

func runModel(t *testing.T, backends modelBackends, defaultSteps int) {
	seed, steps := modelParams(t, defaultSteps)
	t.Logf("%s: seed %d, %d steps", t.Name(), seed, steps)
	w := newModelWorld(t, seed, backends)
	var (
		s     = mState{}
		log   []string
		begin = time.Now()
	)
	fail := func(step int, format string, args ...any) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, format, args...)
		fmt.Fprintf(&b, "\n\nmodel: %s\nseed %d, step %d of %d; the steps so far:\n", s, seed, step+1, steps)
		for i, l := range log {
			fmt.Fprintf(&b, "  %3d %s\n", i+1, l)
		}
		fmt.Fprintf(&b, "reproduce (as root): go test -count=1 -run '%s$' ./cmd/kfm -args -model.seed=%d -model.steps=%d\n", t.Name(), seed, step+1)
		t.Fatal(b.String())
	}
	// Recorded views must be what an empty host shows.
	if bad := w.check(s); len(bad) > 0 {
		fail(-1, "before the first step:\n  %s", strings.Join(bad, "\n  "))
	}
	for step := 0; step < steps; step++ {
		if step > 0 && step%250 == 0 {
			took := time.Since(begin)
			t.Logf("step %d: %s, %.2f steps/s, %d kill -9, %d concurrent pairs (%d busy)", step, took.Round(time.Second), float64(step)/took.Seconds(), w.kills, w.concurrent, w.busy)
		}
		var op, op2 mOp
		mode := "run"
		switch k := w.pick(20); {
		case step == 0:
			// The first backend of XDP (the dispatcher in the VM) is
			// used in every run, however short.
			h := hookID{0, "xdp"}
			op = w.installOp("install", h, w.randomElem(h, ""), w.backends.use["xdp"][0])
		case k < 5:
			op = w.applyOp(s)
		default:
			op = w.singleOp(s)
		}
		switch k := w.pick(20); {
		case k < 3:
			mode = "kill"
		case k < 5:
			if o2, ok := w.commuting(s, op); ok {
				mode, op2 = "concurrent", o2
			}
		}
		entry := op.desc
		switch mode {
		case "kill":
			entry = "kill -9 during: " + op.desc
		case "concurrent":
			entry = "concurrently: " + op.desc + " || " + op2.desc
		}
		log = append(log, entry)
		before, after := s, op.model(s)

		if op.manifest != "" {
			if err := os.WriteFile(filepath.Join(w.configDir, "kfm.yaml"), []byte(op.manifest), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range op.cmds[:len(op.cmds)-1] {
			if code, _, stderr := w.run(c...); code != exitOK {
				fail(step, "kfm %s: exit %d\n%s", strings.Join(c, " "), code, stderr)
			}
		}
		last := op.cmds[len(op.cmds)-1]
		switch mode {
		case "run":
			if code, out, stderr := w.run(last...); code != exitOK {
				fail(step, "kfm %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(last, " "), code, out, stderr)
			}
			s = after
		case "concurrent":
			s = w.concurrently(step, op, op2, s, fail)
		case "kill":
			est := w.took[last[0]]
			if est == 0 {
				est = 500 * time.Millisecond
			}
			delay := time.Duration(w.rng.Int64N(int64(est) * 6 / 5))
			p := w.start(last...)
			time.Sleep(delay)
			p.cmd.Process.Signal(syscall.SIGKILL)
			code := w.result(p)
			switch code {
			case exitOK:
				w.killsMissed++
				s = after
				log[len(log)-1] += fmt.Sprintf(" (finished before the kill at %s)", delay.Round(time.Millisecond))
			case -1:
				w.kills++
				log[len(log)-1] += fmt.Sprintf(" (killed after %s)", delay.Round(time.Millisecond))
				// Recovery: what the boot service runs.
				rec := []string{"apply"}
				if slices.Equal(last, []string{"apply", "--locked"}) {
					rec = []string{"apply", "--locked"}
				}
				if _, err := os.Stat(filepath.Join(w.configDir, "kfm.yaml")); errors.Is(err, fs.ErrNotExist) {
					// The first install, killed before it wrote
					// kfm.yaml: apply refuses for want of one, and
					// what the kill left is removed by name (as
					// TestChainFirstInstallCrash documents).
					rec = []string{"remove (of what kfm status shows)"}
					if msg := w.removeOrphans(); msg != "" {
						fail(step, "after kill -9 of the first install: %s", msg)
					}
				} else if code, out, stderr := w.run(rec...); code != exitOK {
					fail(step, "kfm %s after kill -9: exit %d\nstdout: %s\nstderr: %s", strings.Join(rec, " "), code, out, stderr)
				}
				badAfter := w.check(after)
				if len(badAfter) == 0 {
					s = after
					log[len(log)-1] += ", recovered: after"
					continue
				}
				badBefore := w.check(before)
				if len(badBefore) == 0 {
					s = before
					log[len(log)-1] += ", recovered: before"
					continue
				}
				fail(step, "after kill -9 and kfm %s, the host is neither before nor after the change\n  against after:\n  %s\n  against before:\n  %s",
					strings.Join(rec, " "), strings.Join(badAfter, "\n  "), strings.Join(badBefore, "\n  "))
			default:
				fail(step, "kfm %s (to be killed): exit %d\n%s", strings.Join(last, " "), code, p.stderr.String())
			}
		}
		if bad := w.check(s); len(bad) > 0 {
			fail(step, "after the step the host differs from the model:\n  %s", strings.Join(bad, "\n  "))
		}
		for _, c := range s {
			w.perBackend[c.Backend]++
		}
	}
	// Remove everything; nothing the test ever saw may be left.
	log = append(log, "apply of an empty kfm.yaml")
	if err := os.WriteFile(filepath.Join(w.configDir, "kfm.yaml"), []byte(w.manifest(mState{})), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := w.run("apply"); code != exitOK {
		fail(steps, "kfm apply of an empty kfm.yaml: exit %d\n%s\n%s", code, out, stderr)
	}
	s = mState{}
	if bad := w.check(s); len(bad) > 0 {
		fail(steps, "after removing everything:\n  %s", strings.Join(bad, "\n  "))
	}
	if left := w.leftovers(); len(left) > 0 {
		fail(steps, "after removing everything, objects the test saw are still in the kernel: %v", left)
	}
	took := time.Since(begin)
	t.Logf("%s: seed %d: %d steps in %s (%.2f steps/s), %d kfm commands, %d kill -9 (%d more finished first), %d concurrent pairs (%d busy), chains checked per backend %v, %d programs, %d maps, %d links seen, all gone",
		t.Name(), seed, steps, took.Round(time.Second), float64(steps)/took.Seconds(), w.commands, w.kills, w.killsMissed, w.concurrent, w.busy, w.perBackend, len(w.seenProgs), len(w.seenMaps), len(w.seenLinks))
}

// removeOrphans is the recovery from a first install killed before it
// wrote kfm.yaml: kfm apply refuses (there is no kfm.yaml), and kfm remove
// takes each program kfm status shows (as drift: no file names it) off by
// name. It returns what went wrong, or "".
func (w *modelWorld) removeOrphans() string {
	if code, _, stderr := w.run("apply"); code != exitFailure || !strings.Contains(stderr, "kfm.yaml") {
		return fmt.Sprintf("kfm apply without kfm.yaml: exit %d, want %d and a hint naming kfm.yaml: %s", code, exitFailure, stderr)
	}
	hs, err := w.statusView()
	if err != nil {
		return err.Error()
	}
	for h, st := range hs {
		for _, p := range st.Programs {
			args := []string{"remove", p.Name, "--iface", st.Interface, "--hook", h.Hook}
			if st.Netns != "" {
				args = append(args, "--netns", st.Netns)
			}
			if code, out, stderr := w.run(args...); code != exitOK {
				return fmt.Sprintf("kfm %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
			}
		}
	}
	return ""
}

// commuting finds a second single change that commutes with op (the same
// model whichever runs first) on other programs, for a concurrent pair.
func (w *modelWorld) commuting(s mState, op mOp) (mOp, bool) {
	if len(op.cmds) != 1 || op.manifest != "" {
		return mOp{}, false
	}
	for try := 0; try < 10; try++ {
		op2 := w.singleOp(s)
		if op2.cmds[0][0] == "remove" && op.cmds[0][0] == "remove" && op2.cmds[0][1] == op.cmds[0][1] {
			continue
		}
		if a, b := op2.model(op.model(s)), op.model(op2.model(s)); a.equal(b) && !a.equal(op.model(s)) && !a.equal(op2.model(s)) {
			return op2, true
		}
	}
	return mOp{}, false
}

// concurrently runs two kfm commands at once. They serialise on the host
// lock; with a short --lock-timeout one may give up with exit 5 (busy),
// and then its change did not happen.
func (w *modelWorld) concurrently(step int, op, op2 mOp, s mState, fail func(int, string, ...any)) mState {
	w.concurrent++
	a, b := op.cmds[0], op2.cmds[0]
	if w.pick(2) == 0 {
		b = append(slices.Clone(b), "--lock-timeout", "100ms")
	}
	pa, pb := w.start(a...), w.start(b...)
	ca, cb := w.result(pa), w.result(pb)
	if ca != exitOK {
		fail(step, "concurrent kfm %s: exit %d\n%s", strings.Join(a, " "), ca, pa.stderr.String())
	}
	switch cb {
	case exitOK:
		return op2.model(op.model(s))
	case exitBusy:
		w.busy++
		if !strings.Contains(pb.stderr.String(), "timed out waiting for the kfm host lock") {
			fail(step, "kfm %s: exit 5 without saying why: %s", strings.Join(b, " "), pb.stderr.String())
		}
		return op.model(s)
	}
	fail(step, "concurrent kfm %s: exit %d\n%s", strings.Join(b, " "), cb, pb.stderr.String())
	return s
}

// leftovers lists the programs, maps and links the test saw that the
// kernel still has (freed lazily: a moment is given).
func (w *modelWorld) leftovers() []string {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		for id, name := range w.seenProgs {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				left = append(left, fmt.Sprintf("program %d %s", id, name))
			}
		}
		for id, what := range w.seenMaps {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				m.Close()
				left = append(left, fmt.Sprintf("map %d (%s)", id, what))
			}
		}
		for id := range w.seenLinks {
			if l, err := link.NewFromID(id); err == nil {
				l.Close()
				left = append(left, fmt.Sprintf("link %d", id))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			sort.Strings(left)
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}
