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
// Chains with a Netns are reported as LoadFailed (ErrNetnsUnsupported)
// until package chain can act in another namespace.
package agent
