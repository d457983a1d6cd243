// Package rcu waits for an RCU grace period from user space.
//
// XDP and TC programs run inside RCU read-side critical sections (softirq
// context). After a program or map slot has been swapped, a grace period
// guarantees that no packet still runs (or is about to tail-call into) what
// was swapped out, so it can be torn down without any packet seeing a
// half-dismantled chain.
package rcu

import (
	"time"

	"golang.org/x/sys/unix"
)

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL: on a machine with more than
// one online CPU the kernel implements it with synchronize_rcu().
const membarrierCmdGlobal = 1

// fallback is how long Wait sleeps when membarrier is unavailable
// (nohz_full kernels refuse MEMBARRIER_CMD_GLOBAL). Packet processing of one
// NAPI poll or one skb takes microseconds; this is a wide margin.
const fallback = 50 * time.Millisecond

// Wait returns after an RCU grace period (or, where the kernel offers no way
// to wait for one, after a conservative delay).
func Wait() {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0)
	if errno != 0 {
		time.Sleep(fallback)
	}
}
