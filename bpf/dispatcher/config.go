package dispatcher

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Protocol constants (libxdp's prog_dispatcher.h).
const (
	// Magic is the first byte of the configuration of dispatchers of
	// version 2 and later ('X' + 'D' + 'P').
	Magic = 236
	// Version is the dispatcher version kfm builds.
	Version = 2
	// MaxReadVersion is the newest dispatcher layout kfm reads.
	MaxReadVersion = 3
	// MaxPrograms is the number of slots of a dispatcher.
	MaxPrograms = 10
	// RetVal is what an empty slot returns; its bit is set in every slot's
	// chain-call actions so that the packet goes on past an empty slot.
	RetVal = 31
	// FlagXDPHasFrags is BPF_F_XDP_HAS_FRAGS, the only bit libxdp keeps in
	// ProgramFlags.
	FlagXDPHasFrags = 1 << 5
)

// Sizes of the configuration struct per version.
const (
	sizeV1 = 84  // u8 num_progs_enabled (+3 padding), chain_call_actions[10], run_prios[10]
	sizeV2 = 124 // magic, version, num_progs_enabled, is_xdp_frags, chain_call_actions[10], run_prios[10], program_flags[10]
	sizeV3 = 128 // v2 + u8 is_xdp_devbound (+3 padding)
)

// Errors callers branch on.
var (
	// ErrNotDispatcher: the program is not a libxdp-protocol dispatcher.
	ErrNotDispatcher = errors.New("not an XDP dispatcher")
	// ErrUnsupportedVersion: the dispatcher's version is one kfm does not
	// read (newer than MaxReadVersion) or does not modify (anything but
	// Version).
	ErrUnsupportedVersion = errors.New("unsupported dispatcher version")
)

// Config is struct xdp_dispatcher_config, the dispatcher's .rodata: which
// slots are enabled and how each one chains to the next.
type Config struct {
	// Version is the layout: 1 (no magic, libxdp 1.0-1.1), 2 (magic and
	// frags, libxdp 1.2-1.4) or 3 (device binding, libxdp 1.5).
	Version int
	// NumProgs is the number of enabled slots (num_progs_enabled).
	NumProgs int
	// Frags is set when the dispatcher was loaded with BPF_F_XDP_HAS_FRAGS
	// (is_xdp_frags; version 2 and later).
	Frags bool
	// ChainCallActions[i] is slot i's bitmap of verdicts after which the
	// next slot runs; bit RetVal is always set.
	ChainCallActions [MaxPrograms]uint32
	// RunPrios[i] is slot i's priority, kept so that the next change can
	// sort the programs again.
	RunPrios [MaxPrograms]uint32
	// ProgramFlags[i] holds FlagXDPHasFrags when slot i's program handles
	// multi-buffer packets (version 2 and later).
	ProgramFlags [MaxPrograms]uint32
	// DevBound is is_xdp_devbound (version 3): the dispatcher is bound to
	// a device (XDP hints). kfm never builds such dispatchers.
	DevBound bool
}

// size is the length of the encoded configuration of version v.
func size(v int) (int, error) {
	switch v {
	case 1:
		return sizeV1, nil
	case 2:
		return sizeV2, nil
	case 3:
		return sizeV3, nil
	default:
		return 0, fmt.Errorf("dispatcher version %d: %w", v, ErrUnsupportedVersion)
	}
}

// MarshalBinary encodes the configuration in the layout of c.Version, in
// the host's byte order (as the kernel holds it).
func (c *Config) MarshalBinary() ([]byte, error) {
	n, err := size(c.Version)
	if err != nil {
		return nil, err
	}
	if c.NumProgs < 0 || c.NumProgs > MaxPrograms {
		return nil, fmt.Errorf("%d programs: a dispatcher has %d slots", c.NumProgs, MaxPrograms)
	}
	b := make([]byte, n)
	ne := binary.NativeEndian
	if c.Version == 1 {
		b[0] = byte(c.NumProgs)
		for i := range MaxPrograms {
			ne.PutUint32(b[4+4*i:], c.ChainCallActions[i])
			ne.PutUint32(b[44+4*i:], c.RunPrios[i])
		}
		return b, nil
	}
	b[0] = Magic
	b[1] = byte(c.Version)
	b[2] = byte(c.NumProgs)
	b[3] = boolByte(c.Frags)
	for i := range MaxPrograms {
		ne.PutUint32(b[4+4*i:], c.ChainCallActions[i])
		ne.PutUint32(b[44+4*i:], c.RunPrios[i])
		ne.PutUint32(b[84+4*i:], c.ProgramFlags[i])
	}
	if c.Version >= 3 {
		b[124] = boolByte(c.DevBound)
	}
	return b, nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// ParseConfig decodes a dispatcher configuration as read from its map.
// Versions 2 and later start with Magic and their version. Version 1 has no
// magic: libxdp then reads the version from the dispatcher's BTF
// (dispatcher_version in the xdp_metadata section), which the caller passes
// as btfVersion (0 when the BTF has none). A value that is neither is not a
// dispatcher's (ErrNotDispatcher).
func ParseConfig(b []byte, btfVersion int) (Config, error) {
	var c Config
	if len(b) < 2 {
		return c, fmt.Errorf("%d-byte configuration: %w", len(b), ErrNotDispatcher)
	}
	if b[0] == Magic {
		c.Version = int(b[1])
	} else {
		if btfVersion == 0 {
			return c, fmt.Errorf("configuration has no magic byte and the program's BTF no dispatcher_version: %w", ErrNotDispatcher)
		}
		if btfVersion != 1 {
			return c, fmt.Errorf("configuration has no magic byte but the BTF says version %d: %w", btfVersion, ErrNotDispatcher)
		}
		c.Version = 1
	}
	if c.Version < 1 || c.Version > MaxReadVersion {
		return c, fmt.Errorf("dispatcher version %d is newer than kfm understands (%d): %w", c.Version, MaxReadVersion, ErrUnsupportedVersion)
	}
	need, _ := size(c.Version)
	if c.Version == 3 {
		need = 125 // the struct is padded to 128, is_xdp_devbound ends at 125
	}
	if len(b) < need {
		return c, fmt.Errorf("version %d configuration of %d bytes, want %d: %w", c.Version, len(b), need, ErrNotDispatcher)
	}
	ne := binary.NativeEndian
	if c.Version == 1 {
		c.NumProgs = int(b[0])
		for i := range MaxPrograms {
			c.ChainCallActions[i] = ne.Uint32(b[4+4*i:])
			c.RunPrios[i] = ne.Uint32(b[44+4*i:])
		}
	} else {
		c.NumProgs = int(b[2])
		c.Frags = b[3] != 0
		for i := range MaxPrograms {
			c.ChainCallActions[i] = ne.Uint32(b[4+4*i:])
			c.RunPrios[i] = ne.Uint32(b[44+4*i:])
			c.ProgramFlags[i] = ne.Uint32(b[84+4*i:])
		}
		if c.Version >= 3 {
			c.DevBound = b[124] != 0
		}
	}
	if c.NumProgs > MaxPrograms {
		return c, fmt.Errorf("configuration enables %d slots, a dispatcher has %d: %w", c.NumProgs, MaxPrograms, ErrNotDispatcher)
	}
	return c, nil
}
