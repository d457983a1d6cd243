package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// neededCaps are the capabilities kfm needs to change and read chains
// (measured by TestCapabilities; manifests/kubernetes/daemonset.yaml grants
// the same): CAP_NET_ADMIN to attach to interfaces, CAP_SYS_ADMIN to open
// running programs by ID (it also covers CAP_BPF and CAP_PERFMON).
const neededCaps = "CAP_NET_ADMIN and CAP_SYS_ADMIN"

// permissionHint tells the user which capabilities kfm needs when the
// kernel refused an operation.
func permissionHint(w io.Writer, err error) {
	// Feature probes report a refusal as text (a probe that fails says
	// "not supported"), so the message is looked at too.
	if errors.Is(err, unix.EPERM) || strings.Contains(err.Error(), unix.EPERM.Error()) {
		fmt.Fprintf(w, "kfm: the kernel refused an operation: kfm needs %s (run it as root, or grant them to its container)\n", neededCaps)
	}
}
