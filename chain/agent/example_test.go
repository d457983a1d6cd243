package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/configdir"
)

// An agent that follows /etc/kfm, checks for drift every minute and logs
// as JSON. (Not run: it needs root and runs until stopped.)
func ExampleAgent_Run() {
	mgr, err := chain.New(chain.Options{BPFFS: "/sys/fs/bpf", StateDir: "/run/kfm", ConfigDir: "/etc/kfm"})
	if err != nil {
		panic(err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	a, err := agent.New(agent.Options{
		Manager:       mgr,
		Source:        configdir.New("/etc/kfm", log, nil),
		DriftInterval: time.Minute,
		Logger:        log,
	})
	if err != nil {
		panic(err)
	}
	if err := a.Run(context.Background()); err != nil {
		log.Error("agent", "error", err)
	}
}

func ExampleFromLock() {
	lk := &chain.Lock{Version: chain.LockVersion, Chains: []chain.LockedChain{
		{Interface: "eth0", Hook: "xdp", Programs: []chain.LockedProgram{{Name: "ratelimit", Digest: "sha256:..."}}},
		{Interface: "/veth.*/", Hook: "tc-ingress"},
	}}
	d := agent.FromLock("oci://registry.example.com/fleet/edge:prod", 3, lk)
	for _, c := range d.Chains {
		fmt.Println(c.Owner, c.Generation, c.Interfaces.Names, c.Hook, len(c.Programs))
	}
	// Output:
	// oci://registry.example.com/fleet/edge:prod 3 [eth0] xdp 1
	// oci://registry.example.com/fleet/edge:prod 3 [/veth.*/] tc-ingress 0
}
