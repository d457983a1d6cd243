package metrics

import (
	"context"

	"github.com/cilium/ebpf"
)

// pins keeps the pinned maps an Exporter's collectors opened (verdict
// counters, declared and hash maps) open from one scrape to the next, so
// that a scrape costs a lookup per map and not an open (a path walk, a
// new file descriptor and its type read back from /proc) as well. They
// stay open while the snapshots' generation stays the same, that is while
// kfm changed nothing on the host (a change that replaces a map's pin, a
// reset of a program's maps, rewrites the host state first); maps no
// scrape used are closed at the end of the scrape.
type pins struct {
	gen  string
	open map[string]*ebpf.Map
	used map[string]bool
}

// begin starts a scrape of snapshots of generation gen ("" for unknown:
// nothing is kept).
func (p *pins) begin(gen string) {
	if gen == "" || gen != p.gen {
		p.closeAll()
		p.gen = gen
	}
	p.used = map[string]bool{}
}

// end closes what the scrape did not use.
func (p *pins) end() {
	for path, m := range p.open {
		if !p.used[path] || p.gen == "" {
			m.Close()
			delete(p.open, path)
		}
	}
}

func (p *pins) closeAll() {
	for _, m := range p.open {
		m.Close()
	}
	p.open = map[string]*ebpf.Map{}
}

type pinsKey struct{}

// openPinned opens the map pinned at path read-only: from the exporter's
// pins when ctx carries them, else afresh. release gives it back (closes
// a map opened afresh).
func openPinned(ctx context.Context, path string) (m *ebpf.Map, release func(), err error) {
	if p, ok := ctx.Value(pinsKey{}).(*pins); ok {
		p.used[path] = true
		if m, ok := p.open[path]; ok {
			return m, func() {}, nil
		}
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, nil, err
		}
		p.open[path] = m
		return m, func() {}, nil
	}
	m, err = ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, err
	}
	return m, func() { m.Close() }, nil
}
