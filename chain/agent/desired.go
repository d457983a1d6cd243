package agent

import (
	"context"
	"net/netip"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
)

// Desired is what one source wants on this node.
type Desired struct {
	Chains []Chain
	// NodeIPs, when set, are the node's InternalIP addresses as the source
	// knows them (the Kubernetes Node's status.addresses): they override
	// the agent's Options.NodeIP for PrimaryNodeInterface.
	NodeIPs []netip.Addr
}

// Chain is one hook's chain, wanted on every interface its selector picks.
type Chain struct {
	// Owner names who asks for the chain: "ChainSet/NAME", the config
	// directory, an OCI reference. Results and conflicts are per owner.
	Owner string
	// Generation is the owner's version of what it wants (a ChainSet's
	// metadata.generation), reported back as observedGeneration.
	Generation int64
	Interfaces InterfaceSelector
	// Netns is the network namespace of the interfaces: a path
	// (/run/netns/NAME, /proc/PID/ns/net) or a NAME from `ip netns list`
	// (see chain.NetnsPath); empty is the agent's own. The selector is
	// evaluated on the links inside it.
	Netns   string
	Hook    bpf.Hook
	Backend string
	Mode    string
	// Programs in any order (the chain orders them by priority), each
	// pinned by digest, object digest and accepted signer.
	Programs []chain.LockedProgram
}

// InterfaceSelector picks interfaces by name. A name written /RE/ is a
// regular expression matched against the whole interface name.
type InterfaceSelector struct {
	Names []string
	// PrimaryNodeInterface picks the interface that carries the node's
	// InternalIP (Desired.NodeIPs, else Options.NodeIP), looked up in the
	// chain's network namespace when it has one.
	PrimaryNodeInterface bool
	Exclude              []string
}

// Source delivers a node's desired state.
type Source interface {
	// Name says what the source is, for logs and status.
	Name() string
	// Run calls update with the whole desired state at start and again
	// whenever it changes, until ctx ends or the source fails.
	Run(ctx context.Context, update func(Desired)) error
}

// Kinder is implemented by sources that say what kind they are
// ("config-dir", "oci", "kubernetes"): the source label of the
// kfm_reconcile_* metrics (the source's Name otherwise).
type Kinder interface {
	Kind() string
}

// Reporter is implemented by sources that publish what the node runs.
type Reporter interface {
	Report(ctx context.Context, r Result) error
}

// Result is the outcome of one reconcile: one entry per chain and interface.
type Result struct {
	Chains []ChainResult
}

// Condition reasons of a chain that is not applied.
const (
	ReasonVerificationFailed = "VerificationFailed"
	ReasonLoadFailed         = "LoadFailed"
	ReasonInterfaceMissing   = "InterfaceMissing"
	ReasonConflict           = "Conflict"
)

// ChainResult is one chain on one interface.
type ChainResult struct {
	Owner      string
	Generation int64
	Interface  string
	Netns      string
	Hook       bpf.Hook
	Backend    string
	// Applied is true when the chain runs as wanted; otherwise Reason (one
	// of the Reason constants) and Message say why not.
	Applied  bool
	Reason   string
	Message  string
	Programs []ProgramResult // in run order
}

// ProgramResult is one running program.
type ProgramResult struct {
	Name   string
	Digest string
	ID     uint32
}

// FromLock is the desired state of a kfm.lock: each locked chain, owned by
// owner, on the interface it names (a name written /RE/ selects by regular
// expression, as in an InterfaceSelector) in its network namespace.
func FromLock(owner string, generation int64, lk *chain.Lock) Desired {
	var d Desired
	for _, lc := range lk.Chains {
		d.Chains = append(d.Chains, Chain{
			Owner: owner, Generation: generation,
			Interfaces: InterfaceSelector{Names: []string{lc.Interface}},
			Netns:      lc.NetnsPath(),
			Hook:       lc.Hook, Backend: lc.Backend, Mode: lc.Mode,
			Programs: lc.Programs,
		})
	}
	return d
}
