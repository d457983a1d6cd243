package chaintest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// Backend is what the chain layer needs of a backend (chain.Backend, which
// bpf packages may not import).
type Backend interface {
	Name() string
	Supports(h bpf.Hook) error
	Current(ctx context.Context, t bpf.Target) (*bpf.Chain, error)
	Prepare(ctx context.Context, t bpf.Target, desired []bpf.Component, opts bpf.PrepareOptions) (bpf.Change, error)
	Release(ctx context.Context, t bpf.Target) error
}

// Port is the UDP port test traffic goes to.
const Port = 7000

// Env is a veth pair between two namespaces with a hook to chain on: XDP
// and TC ingress on B's end (traffic A -> B arrives there), TC egress on
// A's end.
type Env struct {
	Pair   *netns.Pair
	NS     *netns.Namespace // where Target's interface lives
	Target bpf.Target
	Sender *netns.Sender
	Recv   *TraceReceiver
	Dst    netip.AddrPort
}

// NewEnv sets up an Env for hook h with a private bpffs.
func NewEnv(t testing.TB, h bpf.Hook) *Env {
	t.Helper()
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	p := netns.NewPair(t)
	e := &Env{Pair: p, NS: p.B, Dst: netip.AddrPortFrom(p.BAddr, Port)}
	e.Target = bpf.Target{Interface: p.BIf, Ifindex: p.BIfindex, Hook: h, BPFFS: bpffs}
	if h == bpf.HookTCEgress {
		e.NS = p.A
		err := p.A.Do(func() error {
			l, err := netlink.LinkByName(p.AIf)
			if err != nil {
				return err
			}
			e.Target.Interface, e.Target.Ifindex = p.AIf, l.Attrs().Index
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	e.Recv = ListenTraces(t, p.B, p.BAddr, Port)
	e.Sender = netns.NewSender(t, p.A)
	return e
}

// Do runs fn in the namespace of the target's interface.
func (e *Env) Do(t testing.TB, fn func() error) {
	t.Helper()
	if err := e.NS.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// Apply prepares and commits desired with b and returns what Programs
// reported.
func (e *Env) Apply(t testing.TB, b Backend, desired []bpf.Component) []bpf.ChainProgram {
	t.Helper()
	progs, err := e.TryApply(b, desired, bpf.PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return progs
}

// TryApply is Apply returning the error.
func (e *Env) TryApply(b Backend, desired []bpf.Component, opts bpf.PrepareOptions) ([]bpf.ChainProgram, error) {
	var progs []bpf.ChainProgram
	err := e.NS.Do(func() error {
		ctx := context.Background()
		ch, err := b.Prepare(ctx, e.Target, desired, opts)
		if err != nil {
			return err
		}
		defer ch.Close()
		progs = ch.Programs()
		return ch.Commit(ctx)
	})
	return progs, err
}

// Current reads b's chain on the target.
func (e *Env) Current(t testing.TB, b Backend) *bpf.Chain {
	t.Helper()
	var c *bpf.Chain
	e.Do(t, func() error {
		var err error
		c, err = b.Current(context.Background(), e.Target)
		return err
	})
	return c
}

// Traces sends n trace datagrams and returns the traces that arrive.
func (e *Env) Traces(t testing.TB, n, expect int) map[string]int {
	t.Helper()
	return SendTraces(t, e.Sender, e.Recv, e.Dst, n, expect)
}
