package rcu

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestMembarrierAvailable: on the kernels kfm is tested on, Wait really waits
// for a grace period instead of falling back to a sleep.
func TestMembarrierAvailable(t *testing.T) {
	const cmdQuery = 0
	mask, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, cmdQuery, 0, 0)
	if errno != 0 {
		t.Fatalf("membarrier(MEMBARRIER_CMD_QUERY): %v", errno)
	}
	if mask&membarrierCmdGlobal == 0 {
		t.Fatalf("membarrier commands %#x lack MEMBARRIER_CMD_GLOBAL", mask)
	}
	Wait()
}
