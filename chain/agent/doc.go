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
package agent
