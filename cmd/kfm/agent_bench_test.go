package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// xdpAttached reports whether iface (in the agent's namespace) has an XDP
// program, straight from netlink.
func (h *host) xdpAttached(iface string) bool {
	attached := false
	h.pair.B.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err == nil && l.Attrs().Xdp != nil {
			attached = l.Attrs().Xdp.Attached
		}
		return nil
	})
	return attached
}

// BenchmarkAgentHotplug measures the time from the creation of an
// interface that kfm.yaml names until the agent has attached its chain
// (goal: under 1 s). The agent runs as a process; the chain is one
// program from the registry, verified on every apply.
func BenchmarkAgentHotplug(b *testing.B) {
	h := newHost(b)
	h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
	iface := "kfmhp" + strconv.Itoa(os.Getpid()%100000)
	h.writeProject([]string{iface}, agentProg{"count", h.reg.Ref("net/count", "1.0.0"), ""})
	a := h.startAgent("--source", h.configDir)
	h.eventually(20*time.Second, "the agent starts", func() bool {
		return a.metric(`kfm_reconcile_total{result="ok",source="config-dir"}`)+a.metric(`kfm_reconcile_total{result="error",source="config-dir"}`) >= 1
	}, a.stderr.String)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := h.pair.B.Do(func() error {
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: iface}, PeerName: iface + "p"})
		}); err != nil {
			b.Fatal(err)
		}
		for !h.xdpAttached(iface) {
			if time.Since(start) > 10*time.Second {
				b.Fatalf("no chain on %s after 10 s\n%s", iface, a.stderr.String())
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		b.StopTimer()
		h.pair.B.Do(func() error {
			l, err := netlink.LinkByName(iface)
			if err == nil {
				err = netlink.LinkDel(l)
			}
			return err
		})
		// Let the agent see the removal before the next round.
		time.Sleep(100 * time.Millisecond)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/attach")
}

// BenchmarkAgentIdle measures the agent's CPU use while idle (no events;
// the drift check runs every minute, as by default) and its resident
// memory, with 1, 100 and 300 chains (one per veth; goal: at most 64 MiB).
// Each iteration is one 10 s idle window.
func BenchmarkAgentIdle(b *testing.B) {
	for _, chains := range []int{1, 100, 300} {
		b.Run(fmt.Sprintf("chains=%d", chains), func(b *testing.B) {
			h := newHost(b)
			h.publish(samplesDir+"xdp_count.o", "net/count", "1.0.0", "")
			var ifaces []string
			if err := h.pair.B.Do(func() error {
				for i := range chains {
					name := fmt.Sprintf("kfmi%d", i)
					ifaces = append(ifaces, name)
					if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			h.writeProject(ifaces, agentProg{"count", h.reg.Ref("net/count", "1.0.0"), ""})
			// The test binary runs kfm without main(), which sets the
			// runtime's soft memory limit (serverMemoryLimitBytes) as the kfm
			// binary does: give the agent the same through GOMEMLIMIT.
			a := h.startAgentEnv([]string{fmt.Sprintf("GOMEMLIMIT=%d", serverMemoryLimitBytes)}, "--source", h.configDir)
			h.eventually(time.Minute+time.Duration(chains)*time.Second, "the agent applies every chain", func() bool {
				code, _ := a.get("/readyz")
				return code == 200
			}, a.stderr.String)
			pid := a.cmd.Process.Pid
			b.ResetTimer()
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				before := cpuTime(b, pid)
				time.Sleep(10 * time.Second)
				cpu += cpuTime(b, pid) - before
			}
			b.ReportMetric(100*cpu.Seconds()/(10*float64(b.N)), "%cpu")
			b.ReportMetric(float64(statusKiB(b, pid, "VmRSS"))/1024, "MiB-rss")
			// RSS is anonymous memory (heap, stacks: what the chains
			// cost) plus the pages of the executable it touched (here the
			// test binary, with the test's own dependencies linked in).
			b.ReportMetric(float64(statusKiB(b, pid, "RssAnon"))/1024, "MiB-anon")
			b.ReportMetric(float64(statusKiB(b, pid, "RssFile"))/1024, "MiB-file")
		})
	}
}

// cpuTime is the process's user+system time (/proc/PID/stat, in clock
// ticks of 10 ms).
func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// statusKiB reads a field of /proc/PID/status given in kB (VmRSS,
// RssAnon, RssFile).
func statusKiB(b *testing.B, pid int, field string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}
