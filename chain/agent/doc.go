// Package agent is kfm's node agent: a long-running process that converges
// one node on the chains its desired-state source asks for.
//
// A source (a config directory, a signed lock in a registry, or the
// Kubernetes ChainSet resources selecting the node) delivers a [Desired]
// state: chains pinned like kfm.lock (digest, object digest, accepted
// signer), each with an interface selector that the agent evaluates on the
// node, again whenever a link appears, disappears or is renamed. The agent
// applies one change at a time through package chain, so every hook switch
// stays atomic, and reports a [Result] per chain back to sources that want
// it ([Reporter]). A node never resolves a tag, and the node's own trust
// policy decides which signers count: nothing a source says can weaken it.
//
// # The reconcile loop
//
// [Agent.Run] reconciles when the source delivers a new Desired, when a link
// appears, disappears or is renamed (a netlink subscription; other link
// changes, such as the agent's own attachments, are ignored), every
// DriftInterval (a chain removed or changed by hand is put back: applying
// what already runs is a no-op that keeps program IDs, anything else is
// re-applied), and after a failure, with exponential backoff. One reconcile
// runs at a time, on a thread in the agent's network namespace.
//
// Ownership: every hook the agent changes is recorded in the host state
// with its chain's Owner (chain.HookState.Owner). Each owner's chains are
// applied as one transaction with chain.Manager.ApplyLock, which refuses
// hooks recorded for anyone else and hooks running programs kfm did not
// install (ReasonConflict); hooks an owner no longer wants are emptied in
// that transaction, and owners the source no longer names lose their hooks
// first, so a hook can change hands. A hook that two owners claim reports
// ReasonConflict for both and stays as it runs. Every non-empty owner in
// the host state is the agent's; kfm.yaml's chains (owner "") are never
// touched, and the kfm CLI refuses to touch the agent's.
//
// # Network namespaces
//
// A chain with a Netns (a path such as /run/netns/NAME or /proc/PID/ns/net,
// or a NAME from `ip netns list`) is chained inside that namespace: its
// interface selector is evaluated on the links there (primaryNodeInterface
// too: the link there that carries the node's InternalIP, usually none),
// and ApplyLock applies it there, with pins keyed by the namespace's cookie
// so that the same ifindex in two namespaces never collides. For every
// such namespace the agent keeps a link subscription inside it while the
// namespace exists, so hot-plug there reacts at once. A namespace that does
// not exist (yet) is not a failure: its chains report ReasonInterfaceMissing
// ("network namespace ... does not exist (yet)"), the other chains apply as
// usual, and the agent watches the namespace's directory (/run/netns, with
// fsnotify) and looks again every few seconds for paths that give no
// events (/proc/PID/ns/net). When the namespace appears it reconciles at
// once. When it disappears the agent closes its subscription at once (an
// open socket would keep the dead namespace, its veths and programs alive)
// and releases what kfm kept for it: every round starts with
// chain.Manager.Refresh (namespaces are resolved afresh, so one re-created
// at the same path is new) and chain.Manager.Prune (the state and pins of
// interfaces and namespaces that are gone are released; a link-delete event
// triggers a round).
//
// # primaryNodeInterface
//
// The interface that carries one of the node's InternalIP addresses: the
// source's Desired.NodeIPs (the Kubernetes source reads them from the Node
// object's status.addresses), else Options.NodeIP (--node-ip). The agent
// looks it up among the links of the namespace it acts in, on the reconcile
// thread (not wherever the process's other threads are), and follows
// address events there, so an InternalIP that moves to another interface
// moves the chain.
//
// # Metrics
//
// [Metrics] feeds chain/metrics' Ops (kfm_reconcile_total{source,result},
// kfm_reconcile_duration_seconds{source}, kfm_apply_total{result},
// kfm_apply_duration_seconds) and adds kfm_reconcile_chains{state},
// kfm_reconcile_last_success_timestamp_seconds and
// kfm_source_refusals_total{reason}. The source label is the source's Kind
// ([Kinder]): config-dir, oci or kubernetes. A round's result is error when
// a chain is left unapplied for a reason other than InterfaceMissing or
// Conflict (which are states that change with the node, not failures).
package agent
