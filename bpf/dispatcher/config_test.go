package dispatcher

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// exampleConfig has every field set, so that a field the encoder or decoder
// forgets shows up.
func exampleConfig(version int) Config {
	c := Config{Version: version, NumProgs: 3}
	for i := range 3 {
		c.ChainCallActions[i] = 1<<RetVal | 1<<2 | uint32(i)<<3
		c.RunPrios[i] = uint32(10 * (i + 1))
	}
	if version >= 2 {
		c.Frags = true
		c.ProgramFlags[1] = FlagXDPHasFrags
	}
	if version >= 3 {
		c.DevBound = true
	}
	return c
}

// TestConfigLayout checks the encoding byte by byte against the C layouts of
// struct xdp_dispatcher_config (versions 1, 2 and 3).
func TestConfigLayout(t *testing.T) {
	ne := binary.NativeEndian
	tests := []struct {
		version int
		size    int
		// offsets of num_progs_enabled, chain_call_actions, run_prios,
		// program_flags (-1: absent)
		numProgs, actions, prios, flags int
	}{
		{1, 84, 0, 4, 44, -1},
		{2, 124, 2, 4, 44, 84},
		{3, 128, 2, 4, 44, 84},
	}
	for _, tt := range tests {
		c := exampleConfig(tt.version)
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("v%d: %v", tt.version, err)
		}
		if len(b) != tt.size {
			t.Errorf("v%d: %d bytes, want %d", tt.version, len(b), tt.size)
			continue
		}
		if got := int(b[tt.numProgs]); got != 3 {
			t.Errorf("v%d: num_progs_enabled = %d at offset %d", tt.version, got, tt.numProgs)
		}
		for i := range MaxPrograms {
			if got := ne.Uint32(b[tt.actions+4*i:]); got != c.ChainCallActions[i] {
				t.Errorf("v%d: chain_call_actions[%d] = %#x, want %#x", tt.version, i, got, c.ChainCallActions[i])
			}
			if got := ne.Uint32(b[tt.prios+4*i:]); got != c.RunPrios[i] {
				t.Errorf("v%d: run_prios[%d] = %d, want %d", tt.version, i, got, c.RunPrios[i])
			}
			if tt.flags >= 0 {
				if got := ne.Uint32(b[tt.flags+4*i:]); got != c.ProgramFlags[i] {
					t.Errorf("v%d: program_flags[%d] = %#x, want %#x", tt.version, i, got, c.ProgramFlags[i])
				}
			}
		}
		if tt.version >= 2 {
			if b[0] != Magic || int(b[1]) != tt.version || b[3] != 1 {
				t.Errorf("v%d: header % x, want magic %d, version, is_xdp_frags 1", tt.version, b[:4], Magic)
			}
		}
		if tt.version == 3 && b[124] != 1 {
			t.Errorf("v3: is_xdp_devbound = %d at offset 124, want 1", b[124])
		}
	}
}

func TestConfigRoundTrip(t *testing.T) {
	for _, v := range []int{1, 2, 3} {
		c := exampleConfig(v)
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		btfVersion := 0
		if v == 1 {
			btfVersion = 1
		}
		got, err := ParseConfig(b, btfVersion)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if got != c {
			t.Errorf("v%d: round trip\n got %+v\nwant %+v", v, got, c)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	v2, _ := (&Config{Version: 2, NumProgs: 1}).MarshalBinary()
	v1, _ := (&Config{Version: 1, NumProgs: 1}).MarshalBinary()
	future := append([]byte{Magic, 4}, make([]byte, 130)...)
	tooMany := bytes.Clone(v2)
	tooMany[2] = 11
	tests := []struct {
		name       string
		value      []byte
		btfVersion int
		want       error
	}{
		{"empty", nil, 0, ErrNotDispatcher},
		{"one byte", []byte{Magic}, 0, ErrNotDispatcher},
		{"no magic, no BTF version", v1, 0, ErrNotDispatcher},
		{"no magic, BTF says 2", v1, 2, ErrNotDispatcher},
		{"v1 truncated", v1[:80], 1, ErrNotDispatcher},
		{"v2 truncated", v2[:120], 0, ErrNotDispatcher},
		{"version 0", []byte{Magic, 0, 0, 0}, 0, ErrUnsupportedVersion},
		{"version 4", future, 0, ErrUnsupportedVersion},
		{"eleven slots", tooMany, 0, ErrNotDispatcher},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig(tt.value, tt.btfVersion)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseConfig = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMarshalErrors(t *testing.T) {
	for _, c := range []Config{{Version: 0}, {Version: 4}, {Version: 2, NumProgs: 11}, {Version: 2, NumProgs: -1}} {
		if _, err := c.MarshalBinary(); err == nil {
			t.Errorf("MarshalBinary(%+v) succeeded", c)
		}
	}
}

// FuzzParseConfig feeds configuration values as read from a map of an
// unknown program: parsing never panics, and what parses encodes back to
// the bytes it came from.
func FuzzParseConfig(f *testing.F) {
	for _, v := range []int{1, 2, 3} {
		c := exampleConfig(v)
		b, _ := c.MarshalBinary()
		f.Add(b, uint8(v))
	}
	f.Add([]byte{Magic, 9, 1, 0}, uint8(0))
	f.Fuzz(func(t *testing.T, value []byte, btfVersion uint8) {
		c, err := ParseConfig(value, int(btfVersion))
		if err != nil {
			return
		}
		if c.NumProgs > MaxPrograms || c.Version < 1 || c.Version > MaxReadVersion {
			t.Fatalf("ParseConfig accepted %+v", c)
		}
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", c, err)
		}
		// Padding and trailing bytes are not kept; compare what is.
		n := min(len(b), len(value))
		for _, off := range meaningful(c.Version) {
			if off < n && b[off] != value[off] && !(off == 3 || off == 124) {
				t.Fatalf("byte %d: encoded %#x, read %#x", off, b[off], value[off])
			}
		}
	})
}

// meaningful lists the offsets that carry data in a layout (not padding).
func meaningful(version int) []int {
	var offs []int
	if version == 1 {
		offs = append(offs, 0)
		for i := 4; i < 84; i++ {
			offs = append(offs, i)
		}
		return offs
	}
	for i := 0; i < 124; i++ {
		offs = append(offs, i)
	}
	if version >= 3 {
		offs = append(offs, 124)
	}
	return offs
}
