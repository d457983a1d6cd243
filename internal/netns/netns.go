package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TB is the part of testing.TB this package uses, so that tools other than
// tests (make demo) can use it with their own cleanup list.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// Namespace is a named network namespace created by a test.
type Namespace struct {
	Name   string
	handle netns.NsHandle
}

// Path is the namespace's bind mount, usable with `ip netns exec` (by Name)
// and nsenter --net=Path.
func (n *Namespace) Path() string { return filepath.Join("/run/netns", n.Name) }

// Do runs fn with the calling goroutine locked to an OS thread that is
// switched into the namespace, and switches the thread back afterwards.
func (n *Namespace) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(n.handle); err != nil {
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread is in the wrong namespace; never let Go reuse it.
			panic(fmt.Sprintf("netns: cannot return to the original namespace: %v", err))
		}
	}()
	return fn()
}

// newNamespace creates a named namespace without moving the caller into it.
func newNamespace(t TB, name string) *Namespace {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("netns: cannot return to the original namespace: %v", err))
	}
	n := &Namespace{Name: name, handle: h}
	t.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil && !os.IsNotExist(err) {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return n
}

// Pair is two namespaces, A (sender) and B (receiver), joined by a veth
// pair.
type Pair struct {
	A, B *Namespace
	// AIf and BIf are the veth ends in A and B.
	AIf, BIf string
	// AAddr and BAddr are the IPv4 addresses of the ends.
	AAddr, BAddr netip.Addr
	// BIfindex is the index of BIf inside B.
	BIfindex int
	// AMAC and BMAC are the ends' hardware addresses.
	AMAC, BMAC net.HardwareAddr
}

func randomID() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// NewPair creates namespaces kfm-<id>-a and kfm-<id>-b joined by a veth pair
// (veth-<id>-a / veth-<id>-b... shortened to the kernel's 15 characters),
// with addresses, static neighbours, and both ends up. Everything is removed
// when the test ends. The caller must be root (see testenv).
func NewPair(t TB) *Pair {
	t.Helper()
	id := randomID()
	p := &Pair{
		A:     newNamespace(t, "kfm-"+id+"-a"),
		B:     newNamespace(t, "kfm-"+id+"-b"),
		AIf:   "kfa" + id,
		BIf:   "kfb" + id,
		AAddr: netip.MustParseAddr("198.18.0.1"),
		BAddr: netip.MustParseAddr("198.18.0.2"),
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.AIf, Namespace: netlink.NsFd(p.A.handle)},
		PeerName:      p.BIf,
		PeerNamespace: netlink.NsFd(p.B.handle),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("create veth %s/%s: %v", p.AIf, p.BIf, err)
	}
	// Deleting the namespaces deletes the veth pair with them; this
	// cleanup only matters if a namespace outlives the test by mistake.

	setup := func(ns *Namespace, ifname string, addr netip.Addr) (int, net.HardwareAddr) {
		var idx int
		var mac net.HardwareAddr
		err := ns.Do(func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(lo); err != nil {
				return err
			}
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return err
			}
			a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(30, 32)}}
			if err := netlink.AddrAdd(l, a); err != nil {
				return fmt.Errorf("add %s to %s: %w", addr, ifname, err)
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
			idx, mac = l.Attrs().Index, l.Attrs().HardwareAddr
			return nil
		})
		if err != nil {
			t.Fatalf("set up %s in %s: %v", ifname, ns.Name, err)
		}
		return idx, mac
	}
	_, p.AMAC = setup(p.A, p.AIf, p.AAddr)
	p.BIfindex, p.BMAC = setup(p.B, p.BIf, p.BAddr)

	// Static neighbours: no ARP on the link, so a program that drops
	// everything cannot stop the other traffic from being addressed.
	neigh := func(ns *Namespace, ifname string, ip netip.Addr, mac net.HardwareAddr) {
		err := ns.Do(func() error {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return err
			}
			return netlink.NeighSet(&netlink.Neigh{
				LinkIndex:    l.Attrs().Index,
				State:        netlink.NUD_PERMANENT,
				IP:           ip.AsSlice(),
				HardwareAddr: mac,
			})
		})
		if err != nil {
			t.Fatalf("static neighbour in %s: %v", ns.Name, err)
		}
	}
	neigh(p.A, p.AIf, p.BAddr, p.BMAC)
	neigh(p.B, p.BIf, p.AAddr, p.AMAC)
	return p
}
