package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/xdp"
)

// maxRetries bounds how often a read starts over because the interface's
// program changed under it (libxdp's MAX_RETRY).
const maxRetries = 10

// running is what the XDP hook of an interface runs, as read from the
// kernel and libxdp's pins.
type running struct {
	ifindex int
	id      ebpf.ProgramID
	mode    xdp.Mode
	root    *ebpf.Program
	name    string

	// cfg is set when root is a dispatcher kfm can read; notDispatcher
	// says why it is not one (or one kfm cannot read) otherwise.
	cfg           *Config
	notDispatcher error

	// dir is the dispatcher's pin directory; pinErr is set when it cannot
	// be read (e.g. the dispatcher was pinned in another bpffs).
	dir    string
	pinErr error
	// The slot programs and (when read with links) their freplace links,
	// in slot order.
	progs []*ebpf.Program
	infos []*ebpf.ProgramInfo
	links []link.Link
}

func (r *running) Close() {
	if r == nil {
		return
	}
	r.root.Close()
	for _, p := range r.progs {
		p.Close()
	}
	for _, l := range r.links {
		l.Close()
	}
	r.progs, r.links = nil, nil
}

// isDispatcher reports whether kfm can read the attached program as a
// dispatcher with its pins.
func (r *running) isDispatcher() bool { return r.cfg != nil && r.pinErr == nil }

// readRunning reads what the XDP hook of t runs, nil when it runs nothing.
// A dispatcher's slot programs are opened from their pins (and with links
// their freplace links too) under libxdp's lock. When the attached program
// changes while it reads, it starts over.
func readRunning(ctx context.Context, t bpf.Target, withLinks bool) (*running, error) {
	for attempt := 0; ; attempt++ {
		// A retry asks the kernel: what the caller knew (see
		// xdp.WithKnown) is what changed.
		r, retry, err := readRunningOnce(ctx, t, withLinks, attempt == 0)
		if !retry || attempt >= maxRetries {
			if retry {
				return nil, fmt.Errorf("%s: the XDP program kept changing while kfm read it (%d tries): %w", t.Interface, attempt+1, bpf.ErrConflict)
			}
			return r, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(1<<attempt) * time.Microsecond):
		}
	}
}

func readRunningOnce(ctx context.Context, t bpf.Target, withLinks, known bool) (_ *running, retry bool, _ error) {
	query := xdp.Query
	if known {
		query = func(ifindex int) (xdp.Attachment, error) { return xdp.QueryContext(ctx, ifindex) }
	}
	att, err := query(t.Ifindex)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", t.Interface, err)
	}
	if att.ProgramID == 0 {
		return nil, false, nil
	}
	root, err := ebpf.NewProgramFromID(att.ProgramID)
	if errors.Is(err, os.ErrNotExist) {
		return nil, true, nil // replaced or detached meanwhile
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: open XDP program %d: %w", t.Interface, att.ProgramID, err)
	}
	r := &running{ifindex: t.Ifindex, id: att.ProgramID, mode: att.Mode, root: root}
	if info, err := root.Info(); err == nil {
		r.name = info.Name
	}
	if att.Mode == xdp.ModeOffload {
		r.notDispatcher = errors.New("it runs in offload mode")
		return r, false, nil
	}
	cfg, err := Inspect(root)
	switch {
	case errors.Is(err, ErrNotDispatcher), errors.Is(err, ErrUnsupportedVersion):
		r.notDispatcher = err
		return r, false, nil
	case err != nil:
		r.Close()
		return nil, false, fmt.Errorf("%s: XDP program %d: %w", t.Interface, att.ProgramID, err)
	}
	r.cfg = &cfg
	r.dir = PinDir(t.BPFFS, t.Ifindex, att.ProgramID)

	unlock, err := lock(ctx, t.BPFFS)
	if err != nil {
		r.Close()
		return nil, false, err
	}
	defer unlock()
	if _, err := os.Stat(r.dir); err != nil {
		if now, qerr := xdp.Query(t.Ifindex); qerr == nil && now.ProgramID != att.ProgramID {
			r.Close()
			return nil, true, nil // replaced meanwhile: its pins went with it
		}
		r.pinErr = fmt.Errorf("dispatcher %d on %s has no pin directory %s (was it loaded with another BPF filesystem, e.g. LIBXDP_BPFFS?): %w", att.ProgramID, t.Interface, r.dir, err)
		return r, false, nil
	}
	for i := range cfg.NumProgs {
		p, err := ebpf.LoadPinnedProgram(progPin(r.dir, i), nil)
		if err != nil {
			r.pinErr = fmt.Errorf("dispatcher %d on %s: slot %d: %w", att.ProgramID, t.Interface, i, err)
			return r, false, nil
		}
		r.progs = append(r.progs, p)
		info, err := p.Info()
		if err != nil {
			r.Close()
			return nil, false, fmt.Errorf("dispatcher %d on %s: slot %d: program info: %w", att.ProgramID, t.Interface, i, err)
		}
		r.infos = append(r.infos, info)
		if withLinks {
			l, err := link.LoadPinnedLink(linkPin(r.dir, i), nil)
			if err != nil {
				r.pinErr = fmt.Errorf("dispatcher %d on %s: slot %d: %w", att.ProgramID, t.Interface, i, err)
				return r, false, nil
			}
			r.links = append(r.links, l)
		}
	}
	return r, false, nil
}

// chain describes a dispatcher as a bpf.Chain.
func (r *running) chain(t bpf.Target) *bpf.Chain {
	c := &bpf.Chain{
		Target:   t,
		Backend:  Name,
		Mode:     string(r.mode),
		RootID:   r.id,
		Version:  r.cfg.Version,
		Programs: []bpf.ChainProgram{},
	}
	for i, info := range r.infos {
		id, _ := info.ID()
		proceed := bpf.ActionsFromXDPMask(r.cfg.ChainCallActions[i] &^ (1 << RetVal))
		if proceed == nil {
			proceed = bpf.Actions{} // never go on; nil would mean the default
		}
		c.Programs = append(c.Programs, bpf.ChainProgram{
			Name:      info.Name,
			Priority:  int(r.cfg.RunPrios[i]),
			ProceedOn: proceed,
			ID:        id,
			Tag:       info.Tag,
		})
	}
	return c
}

// foreignError explains that the hook runs a program kfm must not replace,
// and how to remove it.
func (r *running) foreignError(t bpf.Target) error {
	off := "xdp"
	if r.mode == xdp.ModeSKB {
		off = "xdpgeneric"
	}
	how := fmt.Sprintf("remove it first with `ip link set dev %s %s off` or `xdp-loader unload %s --all`", t.Interface, off, t.Interface)
	switch {
	case r.cfg != nil && r.pinErr != nil:
		return fmt.Errorf("%w; kfm cannot read its programs: %s: %w", r.pinErr, how, bpf.ErrForeignProgram)
	case errors.Is(r.notDispatcher, ErrUnsupportedVersion):
		return fmt.Errorf("%s runs XDP dispatcher %d of a version kfm cannot read (%w); use the tool that loaded it (a newer xdp-loader or kfm), or %s: %w",
			t.Interface, r.id, r.notDispatcher, how, bpf.ErrForeignProgram)
	default:
		return fmt.Errorf("%s runs XDP program %d %q (%s mode), which is not a multi-program dispatcher (%v), and kfm does not replace programs it does not manage: %s: %w",
			t.Interface, r.id, r.name, r.mode, r.notDispatcher, how, bpf.ErrForeignProgram)
	}
}
