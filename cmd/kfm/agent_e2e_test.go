package main

// End-to-end tests of kfm agent: the agent runs as a real process in the
// namespace of a veth pair (see host.start), against a real registry and a
// real kernel, with real signatures.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/faultproxy"
	"golang.org/x/sys/unix"
)

// agentProc is a running kfm agent.
type agentProc struct {
	*proc
	h    *host
	addr string // of --listen
}

// startAgent starts kfm agent with args and waits until it serves --listen.
func (h *host) startAgent(args ...string) *agentProc {
	h.t.Helper()
	return h.startAgentEnv(nil, args...)
}

func (h *host) startAgentEnv(env []string, args ...string) *agentProc {
	h.t.Helper()
	p := h.start(env, append([]string{"agent", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"}, args...)...)
	a := &agentProc{proc: p, h: h}
	re := regexp.MustCompile(`"msg":"listening","address":"([^"]+)"`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			a.addr = m[1]
			return a
		}
		select {
		case <-p.done:
			h.t.Fatalf("kfm agent exited: %v\n%s", p.err, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	h.t.Fatalf("kfm agent does not listen:\n%s", p.stderr.String())
	return nil
}

func (a *agentProc) get(path string) (int, string) {
	a.h.t.Helper()
	// The agent listens in its namespace: dial from there.
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		if derr := a.h.pair.B.Do(func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return nil
		}); derr != nil {
			return nil, derr
		}
		return c, err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + a.addr + path)
	if err != nil {
		a.h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric reads one sample of /metrics ("name" or `name{label="x"}`); 0 if
// absent.
func (a *agentProc) metric(name string) float64 {
	a.h.t.Helper()
	_, body := a.get("/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				a.h.t.Fatalf("metric %s: %q", name, line)
			}
			return v
		}
	}
	return 0
}

// eventually polls cond until it holds or timeout passes.
func (h *host) eventually(timeout time.Duration, what string, cond func() bool, logs func() string) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not within %s\nagent log:\n%s", what, timeout, logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// xdpChain is the names of the chain on iface's XDP hook, in run order,
// and their program IDs (nil when nothing runs).
func (h *host) xdpChain(iface string) ([]string, []ebpf.ProgramID) {
	h.t.Helper()
	// Status of the kernel and the host state only: the config directory
	// is the agent's source, which a test may break on purpose.
	out := h.mustKFM("status", "-o", "json", "--config-dir", h.t.TempDir())
	var all []chain.HookStatus
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		h.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	hs := hookOf(all, iface, "xdp")
	if hs == nil {
		return nil, nil
	}
	var names []string
	var ids []ebpf.ProgramID
	for _, p := range hs.Programs {
		names = append(names, p.Name)
		ids = append(ids, p.ProgramID)
	}
	return names, append(ids, hs.RootID)
}

// detachXDP takes whatever runs on iface's XDP hook off by hand, as an
// operator with ip link would.
func (h *host) detachXDP(iface string) {
	h.t.Helper()
	err := h.pair.B.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		for _, mode := range []int{unix.XDP_FLAGS_DRV_MODE, unix.XDP_FLAGS_SKB_MODE} {
			netlink.LinkSetXdpFdWithFlags(l, -1, mode)
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if names, _ := h.xdpChain(iface); names != nil {
		h.t.Fatalf("%s still runs %v after detaching by hand", iface, names)
	}
}

// agentProg is a program of writeProject's chains.
type agentProg struct {
	name, ref, params string // params: "k: v" (YAML flow map content)
}

// writeProject writes kfm.yaml with one XDP chain of progs (in this
// order) on each of ifaces, and locks it.
func (h *host) writeProject(ifaces []string, progs ...agentProg) {
	h.t.Helper()
	var b strings.Builder
	b.WriteString("version: 1\nchains:\n")
	for _, iface := range ifaces {
		fmt.Fprintf(&b, "  - interface: %s\n    hook: xdp\n    programs:\n", iface)
		for i, p := range progs {
			fmt.Fprintf(&b, "      - name: %s\n        ref: %s\n        priority: %d\n", p.name, p.ref, 10*(i+1))
			if p.params != "" {
				fmt.Fprintf(&b, "        params: {%s}\n", p.params)
			}
		}
	}
	h.writeConfig("kfm.yaml", b.String())
	h.mustKFM("lock")
}

// newAgentHost is a host with two programs published for the agent's
// chains: count, and portfilter on port 7777.
func newAgentHost(t *testing.T) (h *host, count, filter agentProg) {
	t.Helper()
	h = newHost(t)
	count = agentProg{"count", h.reg.Ref("net/count", "1.0.0"), ""}
	filter = agentProg{"portfilter", h.reg.Ref("net/portfilter", "1.0.0"), "port: '7777'"}
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
	return h, count, filter
}

func TestAgentConfigDir(t *testing.T) {
	h, count, filter := newAgentHost(t)
	hotplug := "kfmhp" + strconv.Itoa(int(time.Now().UnixNano()%100000))
	h.writeProject([]string{h.iface, hotplug}, count)

	a := h.startAgent("--source", h.configDir, "--drift-interval", "500ms")
	logs := a.stderr.String
	h.eventually(20*time.Second, "the agent installs the chain", func() bool {
		names, _ := h.xdpChain(h.iface)
		return slices.Equal(names, []string{"count"})
	}, logs)
	h.eventually(5*time.Second, "/readyz turns ready", func() bool { code, _ := a.get("/readyz"); return code == 200 }, logs)
	if code, _ := a.get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	// The agent's rounds and applies in the shared kfm_reconcile_* and
	// kfm_apply_* metrics (chain/metrics' Ops), beside the exporter's.
	_, body := a.get("/metrics")
	if strings.Contains(body, "\nkfm_agent_") {
		t.Errorf("the agent still exposes kfm_agent_* metrics:\n%s", body)
	}
	rounds := a.metric(`kfm_reconcile_total{result="ok",source="config-dir"}`)
	if rounds < 1 {
		t.Errorf(`kfm_reconcile_total{result="ok",source="config-dir"} = %v after the first apply`, rounds)
	}
	if n := a.metric(`kfm_reconcile_duration_seconds_count{source="config-dir"}`); n < rounds {
		t.Errorf("kfm_reconcile_duration_seconds_count %v, fewer than the %v rounds", n, rounds)
	}
	if n := a.metric(`kfm_apply_total{result="ok"}`); n < 1 {
		t.Errorf(`kfm_apply_total{result="ok"} = %v after the first apply`, n)
	}
	if n := a.metric("kfm_apply_duration_seconds_count"); n < 1 {
		t.Errorf("kfm_apply_duration_seconds_count = %v after the first apply", n)
	}
	if ts := a.metric("kfm_reconcile_last_success_timestamp_seconds"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("kfm_reconcile_last_success_timestamp_seconds = %v", ts)
	}
	if !regexp.MustCompile(`\nkfm_chain_programs\{hook="xdp",interface="` + h.iface + `"[^}]*\} 1\n`).MatchString(body) {
		t.Errorf("no kfm_chain_programs 1 for %s from the exporter in the same scrape:\n%s", h.iface, body)
	}
	if n := a.metric(`kfm_reconcile_chains{state="InterfaceMissing"}`); n != 1 {
		t.Errorf(`kfm_reconcile_chains{state="InterfaceMissing"} = %v, want 1 (%s does not exist yet)`, n, hotplug)
	}
	// kfm apply (the CLI) leaves the agent's chain alone, and says so when
	// asked to change it.
	if _, stderr, code := h.kfm("remove", "count", "--iface", h.iface); code == exitOK || !strings.Contains(stderr, "agent") {
		t.Errorf("kfm remove of the agent's program: exit %d, %s", code, stderr)
	}

	// A file change applies.
	h.writeProject([]string{h.iface, hotplug}, count, filter)
	h.eventually(20*time.Second, "the agent applies the changed files", func() bool {
		names, _ := h.xdpChain(h.iface)
		return slices.Equal(names, []string{"count", "portfilter"})
	}, logs)
	got := h.traffic(20, 7777, 8888)
	if got[7777] != 0 || got[8888] != 20 {
		t.Errorf("after the agent's apply: %d datagrams to the filtered port 7777 (want 0), %d to 8888 (want 20)", got[7777], got[8888])
	}

	// Removed by hand: the drift check puts it back.
	_, before := h.xdpChain(h.iface)
	h.detachXDP(h.iface)
	h.eventually(10*time.Second, "the drift check puts the chain back", func() bool {
		names, _ := h.xdpChain(h.iface)
		return slices.Equal(names, []string{"count", "portfilter"})
	}, logs)
	_, after := h.xdpChain(h.iface)
	if slices.Equal(before, after) {
		t.Errorf("program IDs %v unchanged after the chain was put back: it was not reloaded?", after)
	}

	// Hot-plug: an interface created now gets its chain.
	start := time.Now()
	if err := h.pair.B.Do(func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hotplug}, PeerName: hotplug + "p"})
	}); err != nil {
		t.Fatal(err)
	}
	// (Until the agent logs the apply, it may not have saved the host
	// state: status shows the chain as soon as it is committed, and a kill
	// in between leaves a change the restarted agent must finish.)
	h.eventually(10*time.Second, "the new interface gets its chain", func() bool {
		names, _ := h.xdpChain(hotplug)
		return slices.Equal(names, []string{"count", "portfilter"}) && slices.ContainsFunc(strings.Split(logs(), "\n"), func(l string) bool {
			return strings.Contains(l, `"msg":"applied"`) && strings.Contains(l, `"interface":"`+hotplug+`"`)
		})
	}, logs)
	t.Logf("hot-plug: chain attached %v after the link was created", time.Since(start).Round(time.Millisecond))

	// kill -9 and restart: nothing that runs changes.
	_, ids := h.xdpChain(h.iface)
	_, hpIDs := h.xdpChain(hotplug)
	a.cmd.Process.Kill()
	<-a.done
	a = h.startAgent("--source", h.configDir, "--drift-interval", "500ms")
	logs = a.stderr.String
	h.eventually(20*time.Second, "the restarted agent is ready", func() bool { code, _ := a.get("/readyz"); return code == 200 }, logs)
	if _, now := h.xdpChain(h.iface); !slices.Equal(now, ids) {
		t.Errorf("program IDs on %s after kill -9 and restart: %v, before %v", h.iface, now, ids)
	}
	if _, now := h.xdpChain(hotplug); !slices.Equal(now, hpIDs) {
		t.Errorf("program IDs on %s after kill -9 and restart: %v, before %v", hotplug, now, hpIDs)
	}
	if strings.Contains(a.stderr.String(), `"msg":"applied"`) {
		t.Errorf("the restarted agent changed a chain:\n%s", a.stderr.String())
	}

	// An invalid directory is refused; the chains stay.
	h.writeConfig("kfm.yaml", "version: 1\nchains: [\n")
	h.eventually(10*time.Second, "the broken kfm.yaml is refused", func() bool {
		return a.metric(`kfm_source_refusals_total{reason="invalid"}`) >= 1
	}, logs)
	if _, now := h.xdpChain(h.iface); !slices.Equal(now, ids) {
		t.Errorf("program IDs after a refused kfm.yaml: %v, before %v", now, ids)
	}

	// An empty manifest takes the agent's chains off again, every pin with
	// them.
	h.writeConfig("kfm.yaml", "version: 1\nchains: []\n")
	h.mustKFM("lock")
	h.eventually(20*time.Second, "the agent removes its chains", func() bool {
		a, _ := h.xdpChain(h.iface)
		b, _ := h.xdpChain(hotplug)
		return a == nil && b == nil
	}, logs)
	// The host state follows the kernel (written after the switch).
	h.eventually(5*time.Second, "the host state forgets the chains", func() bool { return len(h.hostState().Hooks) == 0 }, func() string {
		return fmt.Sprintf("%+v\n%s", h.hostState().Hooks, logs())
	})
}

func TestAgentOCILock(t *testing.T) {
	h, count, filter := newAgentHost(t)
	lockRef := h.reg.Ref("fleet/edge", "prod")
	push := func(extra ...string) {
		t.Helper()
		h.mustKFM(append([]string{"push-lock", lockRef}, extra...)...)
	}

	// The publisher locks and pushes; the node's agent follows the tag.
	h.writeProject([]string{h.iface}, count)
	push("--key", h.key)
	// The agent reads nothing from the config directory but policy.yaml.
	lockText := h.readConfig("kfm.lock")
	h.writeConfig("kfm.yaml", "")
	h.writeConfig("kfm.lock", "")
	a := h.startAgent("--source", "oci://"+lockRef, "--poll-interval", "200ms")
	logs := a.stderr.String
	h.eventually(20*time.Second, "the agent applies the pushed lock", func() bool {
		names, _ := h.xdpChain(h.iface)
		return slices.Equal(names, []string{"count"})
	}, logs)

	// The tag moves: the agent follows.
	h.writeConfig("kfm.lock", lockText)
	h.writeProject([]string{h.iface}, count, filter)
	push("--key", h.key)
	h.eventually(20*time.Second, "the agent follows the moved tag", func() bool {
		names, _ := h.xdpChain(h.iface)
		return slices.Equal(names, []string{"count", "portfilter"})
	}, logs)
	_, ids := h.xdpChain(h.iface)

	// An unsigned lock and one signed by a key the policy does not trust
	// are refused; the chain keeps running. (Each is a lock never pushed
	// before: a lock's digest depends only on its content, so pushing an
	// earlier lock again would name an artifact that is signed already.)
	h.writeProject([]string{h.iface}, agentProg{"portfilter", filter.ref, "port: '9999'"})
	push("--insecure-unsigned")
	h.eventually(10*time.Second, "the unsigned lock is refused", func() bool {
		return a.metric(`kfm_source_refusals_total{reason="signature"}`) >= 1
	}, logs)
	otherKey, _ := keyPair(t, "other-password")
	h.writeProject([]string{h.iface}, agentProg{"portfilter", filter.ref, "port: '6666'"})
	push("--key", otherKey)
	h.eventually(10*time.Second, "the lock signed by an untrusted key is refused", func() bool {
		return a.metric(`kfm_source_refusals_total{reason="signature"}`) >= 2
	}, logs)
	if !strings.Contains(logs(), "lock refused; the running chains stay") {
		t.Errorf("the agent's log does not say it refused the lock:\n%s", logs())
	}
	if _, now := h.xdpChain(h.iface); !slices.Equal(now, ids) {
		t.Errorf("program IDs after refused locks: %v, before %v", now, ids)
	}
	got := h.traffic(20, 7777, 8888)
	if got[7777] != 0 || got[8888] != 20 {
		t.Errorf("after refused locks: %d datagrams to the filtered port 7777 (want 0), %d to 8888 (want 20)", got[7777], got[8888])
	}
}

// An agent killed with -9 in the middle of an apply converges when it
// starts again, and leaves no pins or programs behind.
func TestAgentCrash(t *testing.T) {
	for _, step := range []string{"prepared", "written-ahead", "committed-1"} {
		t.Run(step, func(t *testing.T) {
			h := newHost(t)
			count := agentProg{"count", h.reg.Ref("net/count", "1.0.0"), ""}
			filter := agentProg{"portfilter", h.reg.Ref("net/portfilter", "1.0.0"), "port: '7777'"}
			h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
			h.publish(samplesDir+"xdp_portfilter.o", "net/portfilter", "1.0.0", "")
			for _, want := range [][]agentProg{{count}, {count, filter}} {
				h.writeProject([]string{h.iface}, want...)
				crashing := h.startAgentEnv([]string{"KFM_TEST_CRASH_AT=" + step}, "--source", h.configDir)
				if _, sig := crashing.wait(t, 30*time.Second); sig != syscall.SIGKILL {
					t.Fatalf("the agent was not killed at %s: %v\n%s", step, sig, crashing.stderr.String())
				}
				a := h.startAgent("--source", h.configDir)
				var names []string
				for _, p := range want {
					names = append(names, p.name)
				}
				h.eventually(20*time.Second, "the restarted agent converges", func() bool {
					code, _ := a.get("/readyz")
					got, _ := h.xdpChain(h.iface)
					return code == 200 && slices.Equal(got, names)
				}, a.stderr.String)
				h.checkKernel(h.status())
				a.cmd.Process.Kill()
				<-a.done
			}
			h.writeConfig("kfm.yaml", "version: 1\nchains: []\n")
			h.mustKFM("lock")
			a := h.startAgent("--source", h.configDir)
			// Done when the hook is empty and the host state says so too
			// (the agent saves it after the switch).
			h.eventually(20*time.Second, "the agent removes its chain", func() bool {
				got, _ := h.xdpChain(h.iface)
				return got == nil && !slices.ContainsFunc(h.hostState().Hooks, func(hs *chain.HookState) bool { return len(hs.Elements) > 0 })
			}, a.stderr.String)
			h.checkEmpty()
		})
	}
}

// A new trust policy takes effect at once (the agent restarts itself with
// it): a signer it refuses leaves the chain running and is reported as
// VerificationFailed; trusted again, the chain is Applied.
func TestAgentPolicyChange(t *testing.T) {
	h := newHost(t)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	h.writeProject([]string{h.iface}, agentProg{"count", h.reg.Ref("net/count", "1.0.0"), ""})
	a := h.startAgent("--source", h.configDir, "--drift-interval", "500ms")
	h.eventually(20*time.Second, "the agent applies the chain", func() bool { code, _ := a.get("/readyz"); return code == 200 }, a.stderr.String)
	_, ids := h.xdpChain(h.iface)

	restarted := func(n int) {
		t.Helper()
		re := regexp.MustCompile(`"msg":"listening","address":"([^"]+)"`)
		h.eventually(20*time.Second, "the agent restarts with the new policy", func() bool {
			m := re.FindAllStringSubmatch(a.stderr.String(), -1)
			if len(m) < n+1 {
				return false
			}
			a.addr = m[n][1]
			return true
		}, a.stderr.String)
	}
	_, otherPub := keyPair(t, "other")
	h.trust(otherPub)
	restarted(1)
	h.eventually(20*time.Second, "the refused signer is reported", func() bool {
		return a.metric(`kfm_reconcile_chains{state="VerificationFailed"}`) == 1
	}, a.stderr.String)
	if _, now := h.xdpChain(h.iface); !slices.Equal(now, ids) {
		t.Errorf("program IDs after the policy refused the signer: %v, before %v", now, ids)
	}
	if code, _ := a.get("/readyz"); code == 200 {
		t.Error("/readyz is ready while the policy refuses the chain")
	}

	h.trust(h.pub)
	restarted(2)
	h.eventually(20*time.Second, "the chain is applied again", func() bool {
		return a.metric(`kfm_reconcile_chains{state="applied"}`) == 1
	}, a.stderr.String)
	if _, now := h.xdpChain(h.iface); !slices.Equal(now, ids) {
		t.Errorf("program IDs after the signer is trusted again: %v, before %v", now, ids)
	}
}

// TestAgentOCILockRegistryDown: the registry that serves the lock goes down
// (every request answered 503, through faultproxy) while its tag moves. The
// agent logs the failed checks, refuses nothing, and keeps the running chain
// (the same program IDs, the same traffic); when the registry is back it
// follows the moved tag.
func TestAgentOCILockRegistryDown(t *testing.T) {
	h, count, filter := newAgentHost(t)
	// The agent reads the lock through the proxy; pushes go straight to
	// the registry.
	p := faultproxy.Start(t, h.reg.Host(), faultproxy.Options{})
	h.writeConfig("policy.yaml", fmt.Sprintf("version: 1\nrules:\n  - match: '%s/**'\n    keys: [%s]\n  - match: '%s/**'\n    keys: [%s]\n", h.reg.Host(), h.pub, p.Host(), h.pub))
	h.writeProject([]string{h.iface}, count)
	h.mustKFM("push-lock", h.reg.Ref("fleet/edge", "prod"), "--key", h.key)
	a := h.startAgent("--source", "oci://"+p.Host()+"/fleet/edge:prod", "--poll-interval", "200ms", "--registry-attempts", "1")
	logs := a.stderr.String
	h.eventually(20*time.Second, "the agent applies the pushed lock", func() bool {
		names, _ := h.xdpChain(h.iface)
		return slices.Equal(names, []string{"count"})
	}, logs)
	_, ids := h.xdpChain(h.iface)

	p.Add(faultproxy.Rule{Fault: faultproxy.Status(503)})
	down := strings.Count(logs(), `"msg":"check lock"`)
	h.writeProject([]string{h.iface}, count, filter)
	h.mustKFM("push-lock", h.reg.Ref("fleet/edge", "prod"), "--key", h.key)
	h.eventually(20*time.Second, "the agent logs two failed checks", func() bool {
		return strings.Count(logs(), `"msg":"check lock"`) >= down+2
	}, logs)
	if n := a.metric(`kfm_source_refusals_total{reason="signature"}`); n != 0 {
		t.Errorf("the agent refused %v locks while the registry was down", n)
	}
	if _, now := h.xdpChain(h.iface); !slices.Equal(now, ids) {
		t.Errorf("program IDs while the registry is down: %v, before %v", now, ids)
	}
	if got := h.traffic(10, 7777); got[7777] != 10 {
		t.Errorf("while the registry is down: %d of 10 datagrams to port 7777 went through the running chain", got[7777])
	}

	p.Clear()
	h.eventually(30*time.Second, "the agent follows the moved tag once the registry is back", func() bool {
		names, _ := h.xdpChain(h.iface)
		return slices.Equal(names, []string{"count", "portfilter"})
	}, logs)
}
