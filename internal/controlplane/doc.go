// Package controlplane runs a real Kubernetes control plane (etcd and
// kube-apiserver, through controller-runtime's envtest) for kfm's tests,
// with kfm's CRDs from manifests/kubernetes/crds installed.
//
// The binaries are built from source by scripts/controlplane.sh (run by
// `make deps`) from the wrapper modules under build/, and cached in
// $HOME/.cache/kfm/controlplane/VERSION; see internal/testenv.ControlPlane.
// There is no kube-controller-manager: nothing garbage-collects owned
// objects, and Nodes exist only when a test creates them.
package controlplane
