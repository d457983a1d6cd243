// Package manifests holds kfm's declarative files: JSON Schemas for
// kfm.yaml, kfm.lock, policy.yaml and bundle metadata (schema/), an example
// kfm.yaml (examples/), the systemd unit that applies the lock at boot
// (systemd/) and a Kubernetes DaemonSet (kubernetes/). The files are
// embedded so that tests and tools can read them from any directory.
package manifests

import "embed"

// FS holds every file of this directory.
//
//go:embed schema examples systemd kubernetes
var FS embed.FS
