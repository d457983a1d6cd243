package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/internal/yamlfile"
)

// BundleFile is bundle.yaml: what a publisher declares beyond what kfm reads
// from the ELF object. Everything is optional. JSON Schema:
// manifests/schema/bundle.schema.json.
//
//	name: ratelimit
//	version: 1.2.0
//	description: Drops packets above a rate per source address
//	license: GPL-2.0-only
//	source: https://github.com/example/ratelimit
//	homepage: https://example.com/ratelimit
//	keywords: [token-bucket, ipv4]
//	categories: [ratelimit, ddos]
//	authors: ["Jane Doe <jane@example.com>"]
//	readme: README.md
//	programs:
//	  - function: ratelimit
//	    hooks: [xdp]
//	    priority: 10
//	    proceedOn: [pass]
//	    minKernel: "5.10"
//	    params:
//	      - name: limit_pps
//	        description: packets per second and source before dropping
type BundleFile struct {
	Name        string `yaml:"name" json:"name,omitempty"`
	Version     string `yaml:"version" json:"version,omitempty"`
	Description string `yaml:"description" json:"description,omitempty"`
	// License overrides the licence string of the object (e.g. an SPDX
	// expression for "Dual BSD/GPL"); the object must still have one.
	// License must be an SPDX expression (syntax checked, see CheckSPDX).
	License string `yaml:"license" json:"license,omitempty"`
	// Source and Homepage are http(s) URLs.
	Source   string `yaml:"source" json:"source,omitempty"`
	Homepage string `yaml:"homepage" json:"homepage,omitempty"`
	// Keywords are free search terms (lower case, no spaces).
	Keywords []string `yaml:"keywords" json:"keywords,omitempty"`
	// Categories come from the vocabulary in Categories.
	Categories []string `yaml:"categories" json:"categories,omitempty"`
	// Authors are free-form lines, "Name <email> (url)" by convention.
	Authors []string `yaml:"authors" json:"authors,omitempty"`
	// Readme is the path of a markdown file, relative to bundle.yaml's
	// directory, published as the bundle's readme layer (ReadmeMediaType,
	// at most MaxReadmeSize bytes of UTF-8).
	Readme string `yaml:"readme" json:"readme,omitempty"`
	// ReadmeData is the readme's content: ReadBundleFile reads it; callers
	// of ParseBundleFile set it themselves.
	ReadmeData []byte           `yaml:"-" json:"-"`
	Programs   []BundleFileProg `yaml:"programs" json:"programs,omitempty"`
}

// BundleFileProg declares defaults for one entry function.
type BundleFileProg struct {
	Function string     `yaml:"function" json:"function"`
	Hooks    []bpf.Hook `yaml:"hooks" json:"hooks,omitempty"`
	// Priority overrides XDP_RUN_CONFIG and the default (50).
	Priority *int `yaml:"priority" json:"priority,omitempty"`
	// ProceedOn overrides XDP_RUN_CONFIG and the default (pass / ok).
	ProceedOn        []string          `yaml:"proceedOn" json:"proceedOn,omitempty"`
	MinKernel        string            `yaml:"minKernel" json:"minKernel,omitempty"`
	RequiredFeatures []string          `yaml:"requiredFeatures" json:"requiredFeatures,omitempty"`
	Params           []BundleFileParam `yaml:"params" json:"params,omitempty"`
	// Metrics declare maps as Prometheus metrics (see MetricConfig);
	// publish checks them against the object's BTF.
	Metrics []MetricConfig `yaml:"metrics" json:"metrics,omitempty"`
}

// BundleFileParam documents a parameter (a volatile const global).
type BundleFileParam struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description" json:"description,omitempty"`
}

// MaxBundleFileSize caps bundle.yaml (1 MiB).
const MaxBundleFileSize = 1 << 20

// ReadBundleFile reads and parses the bundle.yaml at path.
func ReadBundleFile(path string) (*BundleFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxBundleFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	bf, err := ParseBundleFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if bf.Readme != "" {
		rp := bf.Readme
		if !filepath.IsAbs(rp) {
			rp = filepath.Join(filepath.Dir(path), rp)
		}
		if bf.ReadmeData, err = readCapped(rp, MaxReadmeSize); err != nil {
			return nil, fmt.Errorf("%s: readme: %w: %w", path, ErrInvalidBundle, err)
		}
		if err := checkReadme(bf.ReadmeData); err != nil {
			return nil, fmt.Errorf("%s: readme %s: %w: %w", path, rp, ErrInvalidBundle, err)
		}
	}
	return bf, nil
}

// ParseBundleFile parses bundle.yaml. Unknown keys are errors (a typo must not
// silently drop a declaration); errors name the line.
func ParseBundleFile(data []byte) (*BundleFile, error) {
	if len(data) > MaxBundleFileSize {
		return nil, fmt.Errorf("%w: bundle.yaml has more than %d bytes", ErrInvalidBundle, MaxBundleFileSize)
	}
	var bf BundleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&bf); err != nil {
		if errors.Is(err, io.EOF) {
			return &bf, nil // empty file: nothing declared
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalidBundle, strings.TrimPrefix(yamlfile.ExplainUnknownKeys(err, &bf).Error(), "yaml: "))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: bundle.yaml must hold one YAML document", ErrInvalidBundle)
	}
	if err := bf.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	return &bf, nil
}

// readCapped reads at most max+1 bytes of the file at path.
func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max+1))
}

// check validates what can be checked without the object.
func (bf *BundleFile) check() error {
	if err := bf.checkMetadata(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, p := range bf.Programs {
		if p.Function == "" {
			return fmt.Errorf("programs[%d]: function is required", i)
		}
		if seen[p.Function] {
			return fmt.Errorf("program %s is declared twice", p.Function)
		}
		seen[p.Function] = true
		if p.MinKernel != "" && !kernelVersionRe.MatchString(p.MinKernel) {
			return fmt.Errorf("program %s: minKernel %q: want a kernel version such as \"5.10\"", p.Function, p.MinKernel)
		}
		for _, h := range p.Hooks {
			if _, err := bpf.ParseHook(string(h)); err != nil {
				return fmt.Errorf("program %s: %w", p.Function, err)
			}
		}
		names := map[string]bool{}
		for j, pa := range p.Params {
			if pa.Name == "" {
				return fmt.Errorf("program %s: params[%d]: name is required", p.Function, j)
			}
			if names[pa.Name] {
				return fmt.Errorf("program %s: param %s is declared twice", p.Function, pa.Name)
			}
			names[pa.Name] = true
		}
		metrics := map[string]bool{}
		for j := range p.Metrics {
			if err := p.Metrics[j].check(); err != nil {
				return fmt.Errorf("program %s: %w", p.Function, err)
			}
			if metrics[p.Metrics[j].Name] {
				return fmt.Errorf("program %s: metric %s is declared twice", p.Function, p.Metrics[j].Name)
			}
			metrics[p.Metrics[j].Name] = true
		}
	}
	return nil
}

// program returns the declaration for function, or nil.
func (bf *BundleFile) program(function string) *BundleFileProg {
	if bf == nil {
		return nil
	}
	for i := range bf.Programs {
		if bf.Programs[i].Function == function {
			return &bf.Programs[i]
		}
	}
	return nil
}
