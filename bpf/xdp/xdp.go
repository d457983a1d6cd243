package xdp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Mode is an XDP attach mode.
type Mode string

// Attach modes. Offload is recognised so that it can be refused by name.
const (
	ModeNative  Mode = "native"
	ModeSKB     Mode = "skb"
	ModeOffload Mode = "offload"
)

// Errors callers branch on.
var (
	// ErrOccupied: an attach without an expected program found another
	// program attached (XDP_FLAGS_UPDATE_IF_NOEXIST refused).
	ErrOccupied = errors.New("interface already has an XDP program")
	// ErrChanged: the attached program is not the expected one any more
	// (someone else replaced it): re-read and retry.
	ErrChanged = errors.New("attached XDP program changed")
	// ErrOffload: kfm does not attach in offload mode.
	ErrOffload = errors.New("XDP offload mode is not supported: use native or skb")
)

// Netlink attributes the netlink library does not name.
const (
	iflaXDPExpectedFD    = 8
	flagsUpdateIfNoExist = 1 << 0
	flagsSKBMode         = 1 << 1
	flagsDrvMode         = 1 << 2
	flagsHWMode          = 1 << 3
	flagsReplace         = 1 << 4
)

// ParseMode parses "native", "skb" (also "generic") and "offload"; "" is
// native.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "native", "drv":
		return ModeNative, nil
	case "skb", "generic":
		return ModeSKB, nil
	case "offload", "hw":
		return ModeOffload, nil
	default:
		return "", fmt.Errorf("unknown XDP mode %q: use native or skb", s)
	}
}

func (m Mode) flags() (uint32, error) {
	switch m {
	case ModeNative, "":
		return flagsDrvMode, nil
	case ModeSKB:
		return flagsSKBMode, nil
	case ModeOffload:
		return 0, ErrOffload
	default:
		return 0, fmt.Errorf("unknown XDP mode %q", m)
	}
}

// Attachment is what an interface's XDP hook runs.
type Attachment struct {
	// ProgramID is zero when nothing is attached.
	ProgramID ebpf.ProgramID
	Mode      Mode
}

// Query returns the XDP program attached to the interface.
func Query(ifindex int) (Attachment, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return Attachment{}, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	return AttachmentOf(l), nil
}

// AttachmentOf is what l's XDP hook ran when l was read (one link of a
// netlink dump, say).
func AttachmentOf(l netlink.Link) Attachment {
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return Attachment{}
	}
	a := Attachment{ProgramID: ebpf.ProgramID(x.ProgId)}
	switch x.AttachMode {
	case nl.XDP_ATTACHED_SKB:
		a.Mode = ModeSKB
	case nl.XDP_ATTACHED_HW:
		a.Mode = ModeOffload
	default:
		a.Mode = ModeNative
	}
	return a
}

// knownKey is the context key of WithKnown.
type knownKey struct{ ifindex int }

// WithKnown returns a context telling QueryContext what the interface
// with ifindex runs: a caller that read every interface with one netlink
// dump passes what it found to the backends it asks about each hook,
// instead of one netlink request per hook and backend. Only for reading:
// an attachment is known for as long as the caller's read is, never
// across a change of the hook.
func WithKnown(ctx context.Context, ifindex int, a Attachment) context.Context {
	return context.WithValue(ctx, knownKey{ifindex}, a)
}

// QueryContext is Query, answered from ctx when WithKnown put the
// interface's attachment there.
func QueryContext(ctx context.Context, ifindex int) (Attachment, error) {
	if a, ok := ctx.Value(knownKey{ifindex}).(Attachment); ok {
		return a, nil
	}
	return Query(ifindex)
}

// Replace attaches prog to the interface in mode, atomically replacing
// expected. With expected nil the hook must be empty (ErrOccupied
// otherwise); with expected set, ErrChanged reports that another program
// has taken its place. With prog nil, expected is detached.
func Replace(ifindex int, prog, expected *ebpf.Program, mode Mode) error {
	flags, err := mode.flags()
	if err != nil {
		return err
	}
	fd := -1
	if prog != nil {
		fd = prog.FD()
	}
	expectedFD := -1
	if expected != nil {
		expectedFD = expected.FD()
		flags |= flagsReplace
	} else {
		flags |= flagsUpdateIfNoExist
	}

	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifindex)
	req.AddData(msg)
	attrs := nl.NewRtAttr(unix.IFLA_XDP|unix.NLA_F_NESTED, nil)
	attrs.AddRtAttr(nl.IFLA_XDP_FD, u32(uint32(int32(fd))))
	attrs.AddRtAttr(nl.IFLA_XDP_FLAGS, u32(flags))
	if expected != nil {
		attrs.AddRtAttr(iflaXDPExpectedFD, u32(uint32(int32(expectedFD))))
	}
	req.AddData(attrs)
	// A socket of our own with extended acks, so that an error carries the
	// kernel's reason ("MTU too large for XDP", ...) and not only an errno
	// (the netlink library enables extended acks only through a package
	// variable).
	sock, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer sock.Close()
	if err := sock.SetExtAck(true); err != nil {
		return fmt.Errorf("netlink socket: extended acks: %w", err)
	}
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	runtime.KeepAlive(prog)
	runtime.KeepAlive(expected)
	switch {
	case err == nil:
		return nil
	case expected == nil && errors.Is(err, unix.EBUSY):
		return fmt.Errorf("interface %d: %w", ifindex, ErrOccupied)
	case expected != nil && errors.Is(err, unix.EEXIST):
		return fmt.Errorf("interface %d: %w", ifindex, ErrChanged)
	case errors.Is(err, unix.ERANGE) && mode != ModeSKB:
		// The kernel refuses native XDP for programs without the
		// multi-buffer flag when a frame can exceed one page.
		return fmt.Errorf("interface %d: the MTU is too large for native XDP (%w): lower the MTU, or use --mode skb", ifindex, err)
	case errors.Is(err, unix.EOPNOTSUPP) && mode == ModeNative:
		return fmt.Errorf("interface %d: driver has no native XDP support (use --mode skb): %w", ifindex, err)
	default:
		return fmt.Errorf("netlink XDP attach on interface %d: %w", ifindex, err)
	}
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}
