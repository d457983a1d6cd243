// Package v1alpha1 is kfm's Kubernetes API, group kfm.dev, version v1alpha1.
//
// A [ChainSet] (cluster-scoped) asks every node its nodeSelector picks to run
// chains pinned like kfm.lock: each program by registry reference, manifest
// digest, object digest and the signer that was accepted when it was locked.
// The API server refuses a program without these pins (the CRD's schema and
// CEL rules), so a node never resolves a tag. Nothing in a ChainSet can widen
// what a node trusts: the node's own policy.yaml decides which signers count,
// and there is no field for unsigned programs, keys or identities to trust.
//
// Each node's agent writes one [ChainSetNodeStatus] per ChainSet that
// selects it, owned by the ChainSet, and keeps the ChainSet's status counts
// (nodes selected, applied, failed) current.
//
// The CRDs under manifests/kubernetes/crds are generated from these types by
// controller-gen (make generate).
//
// +kubebuilder:object:generate=true
// +groupName=kfm.dev
package v1alpha1
