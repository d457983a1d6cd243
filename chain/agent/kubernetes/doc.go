// Package kubernetes is the node agent's Kubernetes source: it delivers the
// chains of every ChainSet (API group kfm.dev, package api/v1alpha1) whose
// nodeSelector picks this node, and reports what the node runs back as
// ChainSetNodeStatus objects.
//
// # Desired state
//
// [Source] watches all ChainSets and its own Node (by name, from the
// agent's --node-name flag or the NODE_NAME environment variable, which the
// DaemonSet sets from spec.nodeName). It delivers a new [agent.Desired]
// whenever a ChainSet changes or the node's labels or addresses change, and
// only when the result differs from the last one. Chains are ordered by
// ChainSet name, so the same objects always give the same Desired.
//
// primaryNodeInterface is resolved by the agent, not here: the source
// passes the selector on as it is and delivers the Node's InternalIP
// addresses (status.addresses) in Desired.NodeIPs; the agent marks the
// interface that carries one of them, among the links of the namespace it
// acts in (the chain's netns when it has one), and follows address changes
// there with a netlink subscription. A change of the Node's addresses is a
// new Desired. A node whose InternalIP no interface carries reports
// InterfaceMissing.
//
// # Status
//
// [Source.Report] writes one ChainSetNodeStatus per ChainSet that selects the
// node, named CHAINSET.NODE-HASH (HASH keeps names with dots apart), labelled
// kfm.dev/chainset and kfm.dev/node, and owned by the ChainSet
// (ownerReferences; Kubernetes' garbage collector deletes it with the
// ChainSet). It carries the conditions Applied, Progressing and Degraded
// (reason VerificationFailed, LoadFailed, InterfaceMissing or Conflict),
// observedGeneration, and each chain per interface and hook with its backend
// and its programs in run order with their kernel IDs. An object is only
// written when its content changes, and a condition's lastTransitionTime
// only moves when its status does, so a steady node causes no writes. The
// source itself deletes its node's objects for ChainSets that no longer
// select the node or no longer exist.
//
// There is no central controller: after writing its own object each agent
// recounts the ChainSet's status (nodes selected by the nodeSelector, nodes
// Applied at the current generation, nodes Degraded) from the Node list and
// the ChainSetNodeStatus objects, and writes it with optimistic concurrency
// (resourceVersion). It repeats until the count it reads back is the count
// it computes, so the last writer has always counted every report written
// before it, and concurrent agents converge instead of flapping.
//
// # Conflicts
//
// Two ChainSets that claim the same hook on one interface of the node both
// reach the agent in Desired; the agent resolves the interfaces and reports
// both as Conflict (agent.ReasonConflict), and both status objects say
// Degraded/Conflict. The outcome depends only on the objects, not on the
// order of events, so it does not flap.
//
// # Start-up cost
//
// The source uses controller-runtime (cache, client) and client-go. Linking
// it adds about 140 packages to those of package chain (425 instead of 285)
// and, measured with GODEBUG=inittrace=1 on a loaded 2-core machine, about
// 2.6 MB and 19,000 allocations and 30-40 ms of package initialisation. Only
// the kfm agent command should import it; `kfm lock --chainset` imports the
// API types alone (package api/v1alpha1: 24 packages, about 2 ms).
package kubernetes
