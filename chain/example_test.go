package chain_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/chain"
)

// Reading kfm.yaml: chains by interface and hook, programs in the order
// written (kfm sorts them by priority when it applies them).
func ExampleParseManifest() {
	m, err := chain.ParseManifest("kfm.yaml", strings.NewReader(`version: 1
chains:
  - interface: eth0
    hook: xdp
    programs:
      - name: ratelimit
        ref: registry.example.com/net/xdp-ratelimit:^1.2
        priority: 10
        params: {rate: 1000}
      - name: count
        path: /opt/ebpf/xdp_count.o
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range m.Chain("eth0", "xdp").Programs {
		fmt.Println(p.Name, p.Ref+p.Path, p.Params)
	}
	// Output:
	// ratelimit registry.example.com/net/xdp-ratelimit:^1.2 map[rate:1000]
	// count /opt/ebpf/xdp_count.o map[]
}

// A mistake in kfm.yaml is reported with its line, and callers can tell it
// from other failures with errors.Is.
func ExampleParseManifest_unknownKey() {
	_, err := chain.ParseManifest("kfm.yaml", strings.NewReader(`version: 1
chains:
  - interface: eth0
    hook: xdp
    programs:
      - name: count
        path: /opt/ebpf/xdp_count.o
        priorty: 10
`))
	fmt.Println(errors.Is(err, chain.ErrManifest))
	fmt.Println(err)
	// Output:
	// true
	// kfm.yaml: invalid manifest: line 8: unknown key "priorty": did you mean "priority"?
}

// Two snapshots of what every program of eth0's chains did, a second
// apart, with the kernel's run statistics held on in between: packets per
// second and drop share per program, ns per packet where the kernel times
// the program.
func ExampleManager_Stats() {
	m, err := chain.New(chain.Options{BPFFS: "/sys/fs/bpf", StateDir: "/run/kfm", ConfigDir: "/etc/kfm"})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	if on, err := counters.EnableStats(); err == nil {
		defer on.Close()
	}
	before, err := m.Stats(ctx, "eth0")
	if err != nil {
		fmt.Println(err)
		return
	}
	time.Sleep(time.Second)
	after, err := m.Stats(ctx, "eth0")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range chain.WithRates(before, after) {
		for _, p := range c.Programs {
			fmt.Printf("%s %s #%d %s:", c.Interface, c.Hook, p.Position, p.Name)
			if p.PacketsPerSecond != nil {
				fmt.Printf(" %.0f packets/s, %d dropped in all", *p.PacketsPerSecond, p.Counts.Dropped(c.Hook))
			}
			if p.RunRate != nil && p.RunRate.NsPerRun != nil {
				fmt.Printf(", %.1f ns/packet", *p.RunRate.NsPerRun)
			} else if p.NotTimed != "" {
				fmt.Printf(" (%s)", p.NotTimed)
			}
			fmt.Println()
		}
	}
}

// What --netns and a chain's netns: accept: a name under /run/netns, or an
// absolute path to any namespace file.
func ExampleNetnsPath() {
	for _, s := range []string{"", "blue", "/proc/4242/ns/net", "a/b"} {
		p, err := chain.NetnsPath(s)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Printf("%q -> %q\n", s, p)
	}
	// Output:
	// "" -> ""
	// "blue" -> "/run/netns/blue"
	// "/proc/4242/ns/net" -> "/proc/4242/ns/net"
	// error: network namespace "a/b": give a name from `ip netns list` or an absolute path
}

// The node agent releases an interface's state when netlink reports that
// the link was deleted (a pod went away). Prune does the same for every
// interface that no longer exists; every kfm command prunes first.
func ExampleManager_Release() {
	m, err := chain.New(chain.Options{BPFFS: "/sys/fs/bpf", StateDir: "/run/kfm", ConfigDir: "/etc/kfm"})
	if err != nil {
		fmt.Println(err)
		return
	}
	onLinkDelete := func(ctx context.Context, netns string, ifindex int) {
		released, err := m.Release(ctx, netns, ifindex)
		if err != nil {
			fmt.Println("release:", err)
		}
		for _, p := range released {
			fmt.Printf("released %s (ifindex %d): hooks %v, %d pin directories\n", p.Interface, p.Ifindex, p.Hooks, len(p.Pins))
		}
	}
	_ = onLinkDelete // e.g. from a netlink.LinkSubscribe loop
}
