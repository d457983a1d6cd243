package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/analyze"
)

// Config is a bundle's config blob (media type ConfigMediaType): the bundle's
// metadata and, for each entry function of its object, what kfm needs to
// chain it. JSON Schema: manifests/schema/bundle-config.schema.json.
//
// Fields kfm does not know are kept in Extra and written back unchanged, so
// that a newer kfm's bundles survive a round trip through an older one.
type Config struct {
	Name        string `json:"name"`
	Version     string `json:"version,omitempty"`
	Description string `json:"description,omitempty"`
	// License is the licence as the ELF object's license section declares
	// it (the kernel's view), unless the publisher gave an SPDX expression.
	License string `json:"license"`
	// Source is where the source code lives (a URL).
	Source string `json:"source,omitempty"`
	// Homepage, Keywords, Categories and Authors are what the publisher
	// wrote in bundle.yaml, for search and display only: kfm decides
	// nothing on them. Categories may hold values outside Categories
	// (written by a newer kfm).
	Homepage   string          `json:"homepage,omitempty"`
	Keywords   []string        `json:"keywords,omitempty"`
	Categories []string        `json:"categories,omitempty"`
	Authors    []string        `json:"authors,omitempty"`
	Programs   []ProgramConfig `json:"programs"`
	// Extra holds unknown top-level fields.
	Extra map[string]json.RawMessage `json:"-"`
}

// ProgramConfig describes one entry function.
type ProgramConfig struct {
	Function string `json:"function"`
	// Type is the program type as bpftool spells it (xdp, sched_cls...).
	Type string `json:"type"`
	// Hooks the program may be chained on; empty for programs kfm cannot
	// chain (they are listed, but install refuses them).
	Hooks []bpf.Hook `json:"hooks"`
	// Priority is the default position in a chain (lower runs first).
	Priority int `json:"priority"`
	// ProceedOn are the default verdicts on which the packet goes on to
	// the next program, by name (pass, drop... for XDP; ok, shot... for TC).
	ProceedOn []string `json:"proceedOn"`
	// Params are the volatile const globals this program reads.
	Params []ParamConfig `json:"params,omitempty"`
	// Maps are the maps this program uses.
	Maps []MapConfig `json:"maps,omitempty"`
	// MinKernel is the oldest kernel the publisher supports ("5.10").
	MinKernel string `json:"minKernel,omitempty"`
	// RequiredFeatures are kernel features the program needs
	// ("xdp-frags", or what the publisher declared).
	RequiredFeatures []string `json:"requiredFeatures,omitempty"`
	// Capabilities are what kfm publish computed from the object's
	// bytecode (helpers, map types, packet writes, redirects, verdicts,
	// instruction counts; see bpf/analyze). For display only: kfm computes
	// them again from the object whenever it decides anything. Absent in
	// bundles made before they existed.
	Capabilities *analyze.Capabilities `json:"capabilities,omitempty"`
	// Metrics are the maps the publisher declared as metrics.
	Metrics []MetricConfig             `json:"metrics,omitempty"`
	Extra   map[string]json.RawMessage `json:"-"`
}

// ParamConfig is a parameter a user may set at install time.
type ParamConfig struct {
	Name string `json:"name"`
	// Type is the C type (__u32, _Bool, enum mode...).
	Type string `json:"type"`
	// Default is the compiled-in value: a JSON number, boolean or string
	// (json.Number after ParseConfig, so 64-bit values stay exact).
	Default     any                        `json:"default"`
	Description string                     `json:"description,omitempty"`
	Extra       map[string]json.RawMessage `json:"-"`
}

// MapConfig is a map a program uses.
type MapConfig struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Pinning is the pinning intent: "none" or "by_name"
	// (LIBBPF_PIN_BY_NAME: state shared across installs).
	Pinning string                     `json:"pinning"`
	Extra   map[string]json.RawMessage `json:"-"`
}

// MaxConfigSize is the default cap on a bundle config (1 MiB); real ones are
// a few KiB.
const MaxConfigSize = 1 << 20

// ParseConfig reads a bundle config. Numbers are kept exact (json.Number),
// unknown fields are kept in Extra; a config without name or programs, or
// with fields of the wrong type, fails with ErrInvalidBundle.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("bundle config: %d bytes, more than the %d allowed: %w", len(data), MaxConfigSize, ErrTooLarge)
	}
	var c Config
	if err := unmarshalKeep(data, &c, &c.Extra); err != nil {
		return nil, fmt.Errorf("bundle config: %w: %w", ErrInvalidBundle, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("bundle config: %w: %w", ErrInvalidBundle, err)
	}
	return &c, nil
}

// check does the structural checks of a parsed config.
func (c *Config) check() error {
	if strings.TrimSpace(c.Name) == "" {
		return fmt.Errorf("no name")
	}
	if len(c.Programs) == 0 {
		return fmt.Errorf("no programs")
	}
	seen := map[string]bool{}
	for i, p := range c.Programs {
		if p.Function == "" {
			return fmt.Errorf("programs[%d]: no function", i)
		}
		if seen[p.Function] {
			return fmt.Errorf("program %s listed twice", p.Function)
		}
		seen[p.Function] = true
		for _, h := range p.Hooks {
			if _, err := bpf.ParseHook(string(h)); err != nil {
				return fmt.Errorf("program %s: %w", p.Function, err)
			}
		}
		for j, pa := range p.Params {
			if pa.Name == "" {
				return fmt.Errorf("program %s: params[%d]: no name", p.Function, j)
			}
		}
		for j, m := range p.Maps {
			if m.Name == "" {
				return fmt.Errorf("program %s: maps[%d]: no name", p.Function, j)
			}
		}
	}
	return nil
}

// Program returns the entry function called function; an empty name picks
// the only program of a single-program bundle.
func (c *Config) Program(function string) (*ProgramConfig, error) {
	if function == "" {
		if len(c.Programs) == 1 {
			return &c.Programs[0], nil
		}
		return nil, fmt.Errorf("bundle %s has %d programs (%s): choose one", c.Name, len(c.Programs), strings.Join(c.Functions(), ", "))
	}
	for i := range c.Programs {
		if c.Programs[i].Function == function {
			return &c.Programs[i], nil
		}
	}
	return nil, fmt.Errorf("bundle %s has no program %q (it has %s): %w", c.Name, function, strings.Join(c.Functions(), ", "), bpf.ErrNoProgram)
}

// Functions lists the entry functions in config order.
func (c *Config) Functions() []string {
	var out []string
	for _, p := range c.Programs {
		out = append(out, p.Function)
	}
	return out
}

// ProceedOnActions parses ProceedOn for hook h.
func (p *ProgramConfig) ProceedOnActions(h bpf.Hook) (bpf.Actions, error) {
	if len(p.ProceedOn) == 0 {
		return bpf.DefaultProceedOn(h), nil
	}
	return bpf.ParseActions(h, strings.Join(p.ProceedOn, ","))
}

// MarshalJSON writes the config as stable JSON: object keys sorted (unknown
// fields included), no insignificant whitespace, so that equal configs give
// equal bytes and equal digests.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config
	return marshalKeep(plain(c), c.Extra)
}

// UnmarshalJSON reads a config, keeping unknown fields.
func (c *Config) UnmarshalJSON(b []byte) error { return unmarshalKeep(b, c, &c.Extra) }

// MarshalJSON: see Config.MarshalJSON.
func (p ProgramConfig) MarshalJSON() ([]byte, error) {
	type plain ProgramConfig
	return marshalKeep(plain(p), p.Extra)
}

// UnmarshalJSON keeps unknown fields.
func (p *ProgramConfig) UnmarshalJSON(b []byte) error { return unmarshalKeep(b, p, &p.Extra) }

// MarshalJSON: see Config.MarshalJSON.
func (p ParamConfig) MarshalJSON() ([]byte, error) {
	type plain ParamConfig
	return marshalKeep(plain(p), p.Extra)
}

// UnmarshalJSON keeps unknown fields.
func (p *ParamConfig) UnmarshalJSON(b []byte) error { return unmarshalKeep(b, p, &p.Extra) }

// MarshalJSON: see Config.MarshalJSON.
func (m MapConfig) MarshalJSON() ([]byte, error) {
	type plain MapConfig
	return marshalKeep(plain(m), m.Extra)
}

// UnmarshalJSON keeps unknown fields.
func (m *MapConfig) UnmarshalJSON(b []byte) error { return unmarshalKeep(b, m, &m.Extra) }

// marshalKeep marshals the known fields of v (a struct without custom
// marshalling) merged with extra into one JSON object with sorted keys.
func marshalKeep(v any, extra map[string]json.RawMessage) ([]byte, error) {
	known, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(known, &fields); err != nil {
		return nil, err
	}
	for k, raw := range extra {
		if _, ok := fields[k]; ok {
			continue // a known field always wins
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return nil, fmt.Errorf("unknown field %q: %w", k, err)
		}
		fields[k] = compact.Bytes()
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(fields)) {
		if i > 0 {
			buf.WriteByte(',')
		}
		key, _ := json.Marshal(k)
		buf.Write(key)
		buf.WriteByte(':')
		buf.Write(fields[k])
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// unmarshalKeep decodes b into v (a pointer to a struct with a custom
// UnmarshalJSON that calls back here) and stores the fields v does not know
// in *extra.
func unmarshalKeep(b []byte, v any, extra *map[string]json.RawMessage) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	if fields == nil {
		return fmt.Errorf("want a JSON object, got null")
	}
	known := jsonFieldNames(reflect.TypeOf(v).Elem())
	*extra = nil
	for k, raw := range fields {
		// encoding/json matches field names case-insensitively.
		if known[strings.ToLower(k)] {
			continue
		}
		if *extra == nil {
			*extra = map[string]json.RawMessage{}
		}
		(*extra)[k] = raw
	}
	// Decode the known fields through a type without the custom method.
	rv := reflect.ValueOf(v).Elem()
	plainType := reflect.StructOf(structFields(rv.Type()))
	tmp := reflect.New(plainType)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(tmp.Interface()); err != nil {
		return err
	}
	for i := 0; i < rv.NumField(); i++ {
		f := rv.Type().Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		rv.Field(i).Set(tmp.Elem().FieldByName(f.Name))
	}
	return nil
}

// structFields are t's exported JSON fields, for reflect.StructOf.
func structFields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		out = append(out, reflect.StructField{Name: f.Name, Type: f.Type, Tag: f.Tag})
	}
	return out
}

func jsonFieldNames(t reflect.Type) map[string]bool {
	names := map[string]bool{}
	for _, f := range structFields(t) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		names[strings.ToLower(name)] = true
	}
	return names
}
