// Package ocilock is the node agent's desired-state source for fleets
// without Kubernetes: a kfm.lock that a publisher pushed to a registry as a
// signed artifact (kfm push-lock), followed by its tag.
//
// The source polls the tag (a HEAD request, bounded: Interval between
// checks, backing off to MaxBackoff while the registry fails). When the tag
// names a new manifest it verifies the manifest's signature against the
// node's own trust policy, exactly as for bundles, then reads the lock and
// hands it to the agent. A lock that is unsigned, signed by a signer the
// policy refuses, or does not parse is refused: it is logged and counted
// (kfm_source_refusals_total), the agent keeps running what it runs,
// and the source keeps watching the tag. The tag is only ever the way to
// find the lock; the programs in it are pinned by digest and signer.
package ocilock
