package main

// The harness of the end-to-end chain tests (chain_e2e_test.go): a host for
// kfm made of real parts. The interface kfm manages is one end of a veth
// pair in a network namespace of the test's own; pins go to a private bpffs;
// programs come from an in-process OCI registry (CNCF Distribution), signed
// by kfm publish --sign with a key the trust policy names; packets are real
// UDP datagrams sent from the other namespace. kfm runs as users run it:
// through its command line, in-process (run) or as a real process (the test
// binary re-executed as kfm, see TestMain) where a test must kill it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testregistry"
)

// asKFMEnv makes the test binary run as kfm: its value is the network
// namespace to run in (a /run/netns path), the arguments are kfm's.
const asKFMEnv = "KFM_E2E_RUN_AS_KFM"

func TestMain(m *testing.M) {
	if ns := os.Getenv(asKFMEnv); ns != "" {
		os.Exit(runAsKFM(ns, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runAsKFM is the child side: enter the namespace on the main thread (kfm's
// commands run on the calling goroutine; XDP and TC attach resolve the
// interface in that thread's namespace) and run kfm as main does.
func runAsKFM(nsPath string, args []string) int {
	runtime.LockOSThread()
	if nsPath == stayInNetns { // re-executed by execWithCaps
		return run(context.Background(), args, stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	}
	h, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kfm test child: %v\n", err)
		return 125
	}
	if err := vnetns.Set(h); err != nil {
		fmt.Fprintf(os.Stderr, "kfm test child: enter %s: %v\n", nsPath, err)
		return 125
	}
	if caps := os.Getenv(capsEnv); caps != "" {
		return execWithCaps(caps)
	}
	return run(context.Background(), args, stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
}

// Sample programs, relative to cmd/kfm.
const (
	samplesDir  = "../../examples/programs/"
	testprogDir = "../../internal/testprogs/"
)

// host is one machine for the chain tests.
type host struct {
	t         testing.TB
	pair      *netns.Pair
	reg       *testregistry.Registry
	bpffs     string
	configDir string
	stateDir  string
	cacheDir  string
	// key signs what publish publishes (password in KFM_PASSWORD); the
	// policy trusts pub for everything in the registry.
	key, pub string
	iface    string
	// mapIDs collects the IDs of every map the test saw pinned under
	// <bpffs>/kfm (see kernelUsers).
	mapIDs map[ebpf.MapID]bool

	sender    *netns.Sender
	receivers map[int]*netns.Receiver
}

// newHost sets up a host: namespaces and veth pair, bpffs, kfm's
// directories (through KFM_* variables, so every kfm run, in-process or a
// child, uses them), a registry, a key pair and a policy trusting it.
func newHost(t testing.TB) *host {
	t.Helper()
	testenv.RequirePrivileged(t)
	h := &host{t: t, mapIDs: map[ebpf.MapID]bool{}}
	h.cacheDir = cliEnv(t)
	h.configDir = os.Getenv("KFM_CONFIG_DIR")
	h.stateDir = os.Getenv("KFM_STATE_DIR")
	h.bpffs = testenv.BPFFS(t)
	t.Setenv("KFM_BPFFS", h.bpffs)
	h.pair = netns.NewPair(t)
	h.iface = h.pair.BIf
	h.reg = testregistry.Start(t, testregistry.Options{})
	h.key, h.pub = keyPair(t, "e2e-password")
	h.trust(h.pub)
	return h
}

// trust writes policy.yaml: the registry's programs must be signed by one
// of pubs.
func (h *host) trust(pubs ...string) {
	h.t.Helper()
	policy := fmt.Sprintf("version: 1\nrules:\n  - match: '%s/**'\n    keys: [%s]\n", h.reg.Host(), strings.Join(pubs, ", "))
	if err := os.WriteFile(filepath.Join(h.configDir, "policy.yaml"), []byte(policy), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// publish publishes obj at repo:tag, signed with key (h.key when empty),
// with extra publish flags, and returns the bundle digest.
func (h *host) publish(obj, repo, tag, key string, extra ...string) string {
	h.t.Helper()
	if key == "" {
		key = h.key
	}
	args := append([]string{"publish", obj, h.reg.Ref(repo, tag), "--sign", "--key", key, "-o", "json"}, extra...)
	out, stderr, code := kfm(h.t, "", args...)
	if code != exitOK {
		h.t.Fatalf("kfm %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	var res publishResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Signed == nil {
		h.t.Fatalf("publish -o json: %v: %s", err, out)
	}
	return res.Digest
}

// kfm runs the command line in-process inside the namespace of the managed
// interface (registry connections go out from other threads, in the test's
// namespace, where the registry listens).
func (h *host) kfm(args ...string) (stdout, stderr string, code int) {
	h.t.Helper()
	var out, errOut bytes.Buffer
	err := h.pair.B.Do(func() error {
		code = run(context.Background(), args, stdio{in: strings.NewReader(""), out: &out, err: &errOut})
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// mustKFM runs kfm and fails the test unless it exits 0.
func (h *host) mustKFM(args ...string) string {
	h.t.Helper()
	out, stderr, code := h.kfm(args...)
	if code != exitOK {
		h.t.Fatalf("kfm %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

// proc is kfm as a real process in the managed interface's namespace.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error
}

// syncBuffer is a bytes.Buffer that may be read while a process writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start starts kfm as a process with extra environment variables; it is
// killed when the test ends if it still runs. kfm is this test binary
// (startBinary runs another).
func (h *host) start(env []string, args ...string) *proc {
	h.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		h.t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(exe, args...), done: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), asKFMEnv+"="+h.pair.B.Path()), env...)
	return h.run(p)
}

// startBinary is start with the kfm binary bin (e.g. make build's bin/kfm,
// which runs kfm-core: what a user runs, lighter than this test binary,
// which links every command), run in the namespace with nsenter.
func (h *host) startBinary(bin string, env []string, args ...string) *proc {
	h.t.Helper()
	p := &proc{cmd: exec.Command("nsenter", append([]string{"--net=" + h.pair.B.Path(), bin}, args...)...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	return h.run(p)
}

func (h *host) run(p *proc) *proc {
	h.t.Helper()
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	h.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process and returns its exit status, or -1 and the
// signal that killed it.
func (p *proc) wait(t testing.TB, timeout time.Duration) (int, os.Signal) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("kfm %s did not finish in %s\nstderr: %s", strings.Join(p.cmd.Args[1:], " "), timeout, p.stderr.String())
	}
	if ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		return -1, ws.Signal()
	}
	return p.cmd.ProcessState.ExitCode(), nil
}

// writeConfig writes a file into the config directory.
func (h *host) writeConfig(name, content string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.configDir, name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// readConfig reads a file of the config directory ("" if missing).
func (h *host) readConfig(name string) string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.configDir, name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		h.t.Fatal(err)
	}
	return string(b)
}

// lock reads kfm.lock.
func (h *host) lock() *chain.Lock {
	h.t.Helper()
	l, err := chain.LoadLock(filepath.Join(h.configDir, "kfm.lock"))
	if err != nil {
		h.t.Fatal(err)
	}
	return l
}

// status runs kfm status -o json.
func (h *host) status() []chain.HookStatus {
	h.t.Helper()
	out := h.mustKFM("status", "-o", "json")
	var hs []chain.HookStatus
	if err := json.Unmarshal([]byte(out), &hs); err != nil {
		h.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return hs
}

// hookOf is the status of one hook (nil if no chain runs there).
func hookOf(hs []chain.HookStatus, iface, hook string) *chain.HookStatus {
	for i := range hs {
		if hs[i].Interface == iface && string(hs[i].Hook) == hook {
			return &hs[i]
		}
	}
	return nil
}

// hook is hookOf, with an empty status for a hook without a chain.
func hook(hs []chain.HookStatus, iface, name string) *chain.HookStatus {
	if h := hookOf(hs, iface, name); h != nil {
		return h
	}
	return &chain.HookStatus{Interface: iface, Hook: bpf.Hook(name)}
}

// chainView is what a user reads in kfm status about one hook, without the
// kernel's program IDs: run order, digests, priorities, verdicts, params.
func chainView(hs *chain.HookStatus) []string {
	if hs == nil {
		return nil
	}
	var out []string
	for _, p := range hs.Programs {
		out = append(out, fmt.Sprintf("%d %s prio=%d proceed=%s origin=%s digest=%s fn=%s params=%s",
			p.Position, p.Name, p.Priority, strings.Join(p.ProceedOn, ","), p.Origin, p.Digest, p.Function, paramSuffix(p.Params)))
	}
	return out
}

// programIDs lists the kernel program IDs of every hook in hs: roots and
// chain programs.
func programIDs(hs []chain.HookStatus) map[ebpf.ProgramID]string {
	ids := map[ebpf.ProgramID]string{}
	for _, h := range hs {
		if h.RootID != 0 {
			ids[h.RootID] = string(h.Hook) + " root"
		}
		for _, p := range h.Programs {
			ids[p.ProgramID] = string(h.Hook) + " " + p.Name
		}
	}
	return ids
}

// ---- traffic ----

// counter is the per-CPU {packets, bytes} value of the sample programs'
// counting maps.
type counter struct{ Packets, Bytes uint64 }

// mapPackets sums the packets of key in a per-CPU counter map that kfm
// pinned for element on a hook of the managed interface.
func (h *host) mapPackets(hook, element, mapName string, key uint32) uint64 {
	h.t.Helper()
	pin := filepath.Join(h.bpffs, "kfm", "maps", strconv.Itoa(h.pair.BIfindex), hook, element, mapName)
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		h.t.Fatalf("state map of %s: %v", element, err)
	}
	defer m.Close()
	var vals []counter
	if err := m.Lookup(key, &vals); err != nil {
		h.t.Fatalf("lookup %s: %v", pin, err)
	}
	var n uint64
	for _, v := range vals {
		n += v.Packets
	}
	return n
}

// traffic sends n datagrams to each port from the other namespace and
// returns how many arrived per port.
func (h *host) traffic(n int, ports ...int) map[int]uint64 {
	h.t.Helper()
	if h.sender == nil {
		h.sender = netns.NewSender(h.t, h.pair.A)
		h.receivers = map[int]*netns.Receiver{}
	}
	base := map[int]uint64{}
	for _, port := range ports {
		if h.receivers[port] == nil {
			h.receivers[port] = netns.Listen(h.t, h.pair.B, h.pair.BAddr, port)
		}
		base[port] = h.receivers[port].Count()
	}
	for _, port := range ports {
		if _, err := h.sender.Send(netip.AddrPortFrom(h.pair.BAddr, uint16(port)), n, []byte("kfm-e2e")); err != nil {
			h.t.Fatal(err)
		}
	}
	// Wait until every datagram arrived, or until nothing more arrived
	// for a while (dropped ones never do).
	start, last, lastChange := time.Now(), uint64(0), time.Now()
	for time.Since(start) < 3*time.Second {
		var total uint64
		all := true
		for _, port := range ports {
			c := h.receivers[port].Count() - base[port]
			total += c
			all = all && c >= uint64(n)
		}
		if all {
			break
		}
		if total != last {
			last, lastChange = total, time.Now()
		} else if time.Since(lastChange) > 200*time.Millisecond {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := map[int]uint64{}
	for _, port := range ports {
		got[port] = h.receivers[port].Count() - base[port]
	}
	return got
}

// ---- kernel view ----

var (
	genDirRe  = regexp.MustCompile(`(^|/)gen-\d+(/|$)`)
	linkPinRe = regexp.MustCompile(`(^|/)link-\d+$`)
)

// pinTree lists every pin and directory under <bpffs> as "path kind",
// sorted, with the managed interface's ifindex written IFINDEX and
// generation and link numbers written N (they differ from run to run; how
// many there are does not).
func (h *host) pinTree() []string {
	h.t.Helper()
	var out []string
	err := filepath.WalkDir(h.bpffs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == h.bpffs || preloaded(h.bpffs, path) {
			return nil
		}
		rel, _ := filepath.Rel(h.bpffs, path)
		parts := strings.Split(rel, "/")
		for i, p := range parts {
			if p == strconv.Itoa(h.pair.BIfindex) {
				parts[i] = "IFINDEX"
			}
		}
		rel = strings.Join(parts, "/")
		rel = genDirRe.ReplaceAllString(rel, "${1}gen-N$2")
		rel = linkPinRe.ReplaceAllString(rel, "${1}link-N")
		kind := "dir"
		if !d.IsDir() {
			kind = pinKind(path)
		}
		out = append(out, rel+" "+kind)
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// preloaded reports whether path is one of the files the kernel puts into
// every bpffs mount (bpf_preload's maps.debug and progs.debug).
func preloaded(bpffs, path string) bool {
	return filepath.Dir(path) == bpffs && (filepath.Base(path) == "maps.debug" || filepath.Base(path) == "progs.debug")
}

// pinKind says what a bpffs file pins: prog, map (with its type) or link.
func pinKind(path string) string {
	if p, err := ebpf.LoadPinnedProgram(path, nil); err == nil {
		p.Close()
		return "prog"
	}
	if m, err := ebpf.LoadPinnedMap(path, nil); err == nil {
		defer m.Close()
		return "map:" + m.Type().String()
	}
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		l.Close()
		return "link"
	}
	return "unknown"
}

// reachable returns every BPF program that can outlive the kfm processes
// of this host, with its kernel name: the programs pinned under <bpffs>,
// those behind pinned links, those attached to the managed interface (XDP,
// TCX, cls_bpf filters), and, transitively, the programs in any PROG_ARRAY
// these programs or the pins reference. Once no kfm process runs, the
// kernel frees every program of this test that is not in this set (a
// program lives only while a file descriptor, a pin, a link, an attachment
// or a program array holds it), so this set is exactly what kfm left in
// the kernel. It also records the IDs of the maps pinned under <bpffs>/kfm
// in h.mapIDs.
func (h *host) reachable() map[ebpf.ProgramID]string {
	h.t.Helper()
	progs := map[ebpf.ProgramID]string{}
	var queue []ebpf.ProgramID
	seenMaps := map[ebpf.MapID]bool{}
	addProg := func(id ebpf.ProgramID) {
		if id != 0 {
			if _, ok := progs[id]; !ok {
				progs[id] = ""
				queue = append(queue, id)
			}
		}
	}
	addMap := func(m *ebpf.Map) {
		info, err := m.Info()
		if err != nil {
			h.t.Fatalf("map info: %v", err)
		}
		id, _ := info.ID()
		if seenMaps[id] {
			return
		}
		seenMaps[id] = true
		if m.Type() != ebpf.ProgramArray {
			return
		}
		for k := uint32(0); k < m.MaxEntries(); k++ {
			var pid uint32
			if err := m.Lookup(k, &pid); err == nil {
				addProg(ebpf.ProgramID(pid))
			}
		}
	}
	err := filepath.WalkDir(h.bpffs, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || preloaded(h.bpffs, path) {
			return err
		}
		if p, err := ebpf.LoadPinnedProgram(path, nil); err == nil {
			info, err := p.Info()
			p.Close()
			if err != nil {
				return err
			}
			id, _ := info.ID()
			addProg(id)
			return nil
		}
		if m, err := ebpf.LoadPinnedMap(path, nil); err == nil {
			defer m.Close()
			if info, err := m.Info(); err == nil {
				if id, ok := info.ID(); ok && strings.HasPrefix(path, filepath.Join(h.bpffs, "kfm")+"/") {
					h.mapIDs[id] = true
				}
			}
			addMap(m)
			return nil
		}
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			info, err := l.Info()
			l.Close()
			if err != nil {
				return err
			}
			addProg(info.Program)
			return nil
		}
		return fmt.Errorf("%s: not a program, map or link pin", path)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	// What runs on the interface's hooks.
	err = h.pair.B.Do(func() error {
		l, err := netlink.LinkByIndex(h.pair.BIfindex)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil {
			addProg(ebpf.ProgramID(x.ProgId))
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: h.pair.BIfindex, Attach: at})
			if err != nil {
				return fmt.Errorf("query %s: %w", at, err)
			}
			for _, p := range res.Programs {
				addProg(p.ID)
			}
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := netlink.FilterList(l, parent)
			if err != nil {
				continue // no clsact qdisc
			}
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok {
					addProg(ebpf.ProgramID(bf.Id))
				}
			}
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			progs[id] = "gone"
			continue
		}
		info, err := p.Info()
		if err != nil {
			p.Close()
			h.t.Fatal(err)
		}
		progs[id] = info.Name
		mids, _ := info.MapIDs()
		for _, mid := range mids {
			m, err := ebpf.NewMapFromID(mid)
			if err != nil {
				continue
			}
			addMap(m)
			m.Close()
		}
		p.Close()
	}
	return progs
}

// kernelUsers lists every program in the whole kernel (other tests and
// tools load programs too) that uses one of the maps this test saw pinned
// under <bpffs>/kfm (state maps, tail-call arrays, meta maps): those maps
// are this host's alone, so every such program is one kfm loaded for this
// test, whichever process loaded it and whatever holds it. (Programs
// without such maps, e.g. tc_mark, are covered by reachable alone.)
func (h *host) kernelUsers() map[ebpf.ProgramID]string {
	h.t.Helper()
	out := map[ebpf.ProgramID]string{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return out
		}
		if err != nil {
			h.t.Fatalf("iterate kernel programs: %v", err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // freed in between
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			continue
		}
		mids, _ := info.MapIDs()
		if slices.ContainsFunc(mids, func(m ebpf.MapID) bool { return h.mapIDs[m] }) {
			out[id] = info.Name
		}
	}
}

// checkKernel asserts that the kernel holds exactly the chains kfm status
// reports, and nothing else of this test: the programs reachable from the
// pins and the interface's hooks are exactly the roots and programs of the
// status, and every program in the kernel that uses one of the test's maps
// is among them. Programs the kernel frees lazily (after a program array
// lost its last user) get a moment to go.
func (h *host) checkKernel(hs []chain.HookStatus) {
	h.t.Helper()
	want := programIDs(hs)
	var reach, users map[ebpf.ProgramID]string
	deadline := time.Now().Add(3 * time.Second)
	for {
		reach = h.reachable()
		users = h.kernelUsers()
		extraReach, extraUsers := extra(reach, want), extra(users, want)
		missing := extra(want, reach)
		if len(extraReach)+len(extraUsers)+len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Errorf("kernel holds programs kfm status does not report:\n  reachable from pins and hooks but not in status: %v\n  in the kernel, using this test's maps, not in status: %v\n  in status but not reachable: %v\n  status: %v",
				extraReach, extraUsers, missing, want)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// extra lists the entries of a that b lacks, as "id name".
func extra(a, b map[ebpf.ProgramID]string) []string {
	var out []string
	for id, name := range a {
		if _, ok := b[id]; !ok {
			out = append(out, fmt.Sprintf("%d %s", id, name))
		}
	}
	sort.Strings(out)
	return out
}

// checkEmpty asserts that nothing of kfm is left: no chain in kfm status,
// no program reachable from the pins or hooks, no program in the kernel
// using the test's maps, and nothing under <bpffs>, not even a directory.
func (h *host) checkEmpty() {
	h.t.Helper()
	if hs := h.status(); len(hs) != 0 {
		h.t.Errorf("kfm status after removing everything: %+v", hs)
	}
	h.checkKernel(nil)
	if pins := h.pinTree(); len(pins) != 0 {
		h.t.Errorf("pins left under %s: %v", h.bpffs, pins)
	}
}
