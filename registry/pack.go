package registry

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/analyze"
)

// PackOptions say what goes into a bundle besides the object. Fields set
// here override bundle.yaml, which overrides what kfm reads from the object.
type PackOptions struct {
	Name        string
	Version     string
	Description string
	License     string
	Source      string
	// BundleFile is the parsed bundle.yaml, nil when there is none.
	BundleFile *BundleFile
	// ObjectName is the object's file name, written as the layer's title
	// (tools such as `oras pull` save the layer under it). Default
	// "object.o".
	ObjectName string
	// Created is the creation time written to the manifest annotations.
	// Use SourceDateEpoch to honour SOURCE_DATE_EPOCH; the zero value
	// means the epoch (1970-01-01T00:00:00Z), never "now", so that the
	// same inputs give the same digest.
	Created time.Time
}

// SourceDateEpoch returns the time in $SOURCE_DATE_EPOCH (seconds since the
// epoch, see reproducible-builds.org), or the epoch itself when it is unset.
func SourceDateEpoch() (time.Time, error) {
	v := strings.TrimSpace(os.Getenv("SOURCE_DATE_EPOCH"))
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want a non-negative number of seconds since 1970-01-01", v)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// Pack validates object against the options and builds a bundle from it:
// config, manifest and their exact bytes, ready for Client.Publish. The same
// object and options give byte-identical manifests.
//
// Validation: the object parses (cilium/ebpf) and has a licence; every
// function bundle.yaml declares exists; declared hooks fit the program type;
// proceed-on verdicts are valid for the hooks; declared params are volatile
// const globals of the object. Failures wrap ErrInvalidBundle.
func Pack(object []byte, opts PackOptions) (*Bundle, error) {
	if opts.ObjectName == "" {
		opts.ObjectName = "object.o"
	}
	opts.ObjectName = filepath.Base(opts.ObjectName)
	obj, err := bpf.ParseObject(opts.ObjectName, object)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	cfg, err := buildConfig(obj, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", opts.ObjectName, ErrInvalidBundle, err)
	}
	configJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	objDigest := digest.FromBytes(object)
	layers := []ocispec.Descriptor{{
		MediaType:   ObjectMediaType,
		Digest:      objDigest,
		Size:        int64(len(object)),
		Annotations: map[string]string{AnnotationTitle: opts.ObjectName},
	}}
	var readme []byte
	if opts.BundleFile != nil && len(opts.BundleFile.ReadmeData) > 0 {
		readme = opts.BundleFile.ReadmeData
		// The object stays the first layer: older kfm releases and
		// tools that take layer 0 find it there.
		layers = append(layers, ocispec.Descriptor{
			MediaType:   ReadmeMediaType,
			Digest:      digest.FromBytes(readme),
			Size:        int64(len(readme)),
			Annotations: map[string]string{AnnotationTitle: ReadmeTitle},
		})
	}
	configDesc := ocispec.Descriptor{
		MediaType: ConfigMediaType,
		Digest:    digest.FromBytes(configJSON),
		Size:      int64(len(configJSON)),
	}
	created := opts.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	annotations := map[string]string{
		AnnotationTitle:   cfg.Name,
		AnnotationCreated: created.UTC().Format(time.RFC3339),
	}
	for k, v := range map[string]string{
		AnnotationVersion:     cfg.Version,
		AnnotationDescription: cfg.Description,
		AnnotationLicenses:    cfg.License,
		AnnotationSource:      cfg.Source,
		AnnotationURL:         cfg.Homepage,
		AnnotationAuthors:     strings.Join(cfg.Authors, ", "),
	} {
		if v != "" {
			annotations[k] = v
		}
	}
	manifest := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       configDesc,
		Layers:       layers,
		Annotations:  annotations,
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return nil, err
	}
	d := digest.FromBytes(manifestJSON)
	return &Bundle{
		Digest:         d,
		Size:           int64(len(manifestJSON)),
		Format:         FormatKFM,
		Config:         cfg,
		ObjectName:     opts.ObjectName,
		ObjectDigest:   objDigest,
		Object:         object,
		Readme:         string(readme),
		Manifest:       manifest,
		ManifestDigest: d,
		manifestJSON:   manifestJSON,
		configJSON:     configJSON,
	}, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// buildConfig derives the bundle config from the object, bundle.yaml and the
// options.
func buildConfig(obj *bpf.Object, opts PackOptions) (*Config, error) {
	bf := opts.BundleFile
	if bf == nil {
		bf = &BundleFile{}
	}
	if err := bf.check(); err != nil {
		return nil, err
	}
	cfg := &Config{
		Name:        firstNonEmpty(opts.Name, bf.Name),
		Version:     firstNonEmpty(opts.Version, bf.Version),
		Description: firstNonEmpty(opts.Description, bf.Description),
		License:     firstNonEmpty(opts.License, bf.License, obj.License),
		Source:      firstNonEmpty(opts.Source, bf.Source),
		Homepage:    bf.Homepage,
		Keywords:    slices.Clone(bf.Keywords),
		Categories:  slices.Clone(bf.Categories),
		Authors:     slices.Clone(bf.Authors),
	}
	if opts.License != "" {
		if err := CheckSPDX(opts.License); err != nil {
			return nil, fmt.Errorf("--license: %w", err)
		}
	}
	for _, u := range []string{opts.Source} {
		if err := checkURL(u); err != nil {
			return nil, fmt.Errorf("--source: %w", err)
		}
	}
	if cfg.Name == "" {
		return nil, fmt.Errorf("the bundle has no name: set name in bundle.yaml or pass --name")
	}
	chainable := false
	for _, p := range obj.Programs {
		chainable = chainable || len(p.Hooks) > 0
	}
	if !chainable {
		return nil, fmt.Errorf("the object has no program kfm can chain (xdp or sched_cls); it has %s", programTypes(obj))
	}
	for _, p := range bf.Programs {
		prog, err := obj.Program(p.Function)
		if err != nil {
			return nil, fmt.Errorf("bundle.yaml declares program %s: %w", p.Function, err)
		}
		if len(prog.Hooks) == 0 {
			return nil, fmt.Errorf("bundle.yaml declares program %s, a %s program; kfm chains xdp and sched_cls programs", p.Function, prog.Type)
		}
	}
	spec, err := obj.Spec(nil)
	if err != nil {
		return nil, err
	}
	for _, p := range obj.Programs {
		pc, err := programConfig(obj, spec, p, bf.program(p.Function))
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", p.Function, err)
		}
		cfg.Programs = append(cfg.Programs, pc)
	}
	return cfg, nil
}

func programConfig(obj *bpf.Object, spec *ebpf.CollectionSpec, p bpf.Program, decl *BundleFileProg) (ProgramConfig, error) {
	pc := ProgramConfig{Function: p.Function, Type: p.Type, Hooks: slices.Clone(p.Hooks), Priority: bpf.DefaultPriority}
	caps, err := analyze.Program(spec, p.Function)
	if err != nil {
		return pc, err
	}
	pc.Capabilities = caps
	if pc.Hooks == nil {
		pc.Hooks = []bpf.Hook{}
	}
	if decl == nil {
		decl = &BundleFileProg{}
	}
	if len(decl.Hooks) > 0 {
		var hooks []bpf.Hook
		for _, h := range decl.Hooks {
			hook, err := bpf.ParseHook(string(h))
			if err != nil {
				return pc, err
			}
			if !slices.Contains(p.Hooks, hook) {
				return pc, fmt.Errorf("declared hook %s does not fit a %s program (it can run on %s)", hook, p.Type, hookList(p.Hooks))
			}
			if !slices.Contains(hooks, hook) {
				hooks = append(hooks, hook)
			}
		}
		pc.Hooks = hooks
	}
	chainable := len(pc.Hooks) > 0
	rc, hasRC := obj.RunConfigFor(p.Function)
	switch {
	case decl.Priority != nil:
		pc.Priority = *decl.Priority
	case hasRC:
		pc.Priority = rc.Priority
	}
	switch {
	case len(decl.ProceedOn) > 0:
		if !chainable {
			return pc, fmt.Errorf("proceedOn declared for a %s program, which kfm cannot chain", p.Type)
		}
		for _, h := range pc.Hooks {
			as, err := bpf.ParseActions(h, strings.Join(decl.ProceedOn, ","))
			if err != nil {
				return pc, fmt.Errorf("proceedOn for hook %s: %w", h, err)
			}
			pc.ProceedOn = as.Names(h)
		}
	case !chainable:
		pc.ProceedOn = []string{}
	case hasRC && p.Type == "xdp":
		pc.ProceedOn = rc.ProceedOn.Names(bpf.HookXDP)
	default:
		pc.ProceedOn = bpf.DefaultProceedOn(pc.Hooks[0]).Names(pc.Hooks[0])
	}
	pc.MinKernel = decl.MinKernel
	pc.RequiredFeatures = slices.Clone(decl.RequiredFeatures)
	if p.Frags && !slices.Contains(pc.RequiredFeatures, "xdp-frags") {
		pc.RequiredFeatures = append(pc.RequiredFeatures, "xdp-frags")
	}

	// Params and maps this program's code refers to, plus params the
	// publisher documented.
	usedParams, usedMaps := references(spec, p.Function)
	descs := map[string]string{}
	for _, dp := range decl.Params {
		if _, ok := obj.Param(dp.Name); !ok {
			return pc, fmt.Errorf("bundle.yaml documents param %s, which is not a volatile const global of the object (it has %s)", dp.Name, paramList(obj))
		}
		descs[dp.Name] = dp.Description
		usedParams[dp.Name] = true
	}
	for _, op := range obj.Params {
		if !usedParams[op.Name] {
			continue
		}
		pc.Params = append(pc.Params, ParamConfig{Name: op.Name, Type: op.Type, Default: op.Default, Description: descs[op.Name]})
	}
	if err := checkMetrics(obj, decl.Metrics); err != nil {
		return pc, fmt.Errorf("bundle.yaml: %w", err)
	}
	pc.Metrics = decl.Metrics
	for _, m := range obj.Maps {
		if usedMaps[m.Name] {
			pc.Maps = append(pc.Maps, MapConfig{Name: m.Name, Type: m.Type, Pinning: m.Pinning})
		}
	}
	return pc, nil
}

// references finds the params (volatile const globals) and maps the code of
// function refers to, bpf-to-bpf callees included (cilium/ebpf links them
// into the program's instructions).
func references(spec *ebpf.CollectionSpec, function string) (params, maps map[string]bool) {
	params, maps = map[string]bool{}, map[string]bool{}
	ps := spec.Programs[function]
	if ps == nil {
		return params, maps
	}
	for _, ins := range ps.Instructions {
		ref := ins.Reference()
		if ref == "" || !ins.IsLoadFromMap() {
			continue
		}
		if !strings.HasPrefix(ref, ".") {
			maps[ref] = true
			continue
		}
		// A load of a global's address: the offset into the section is
		// the upper half of the constant.
		off := uint32(uint64(ins.Constant) >> 32)
		for name, v := range spec.Variables {
			if v.SectionName == ref && off >= v.Offset && off < v.Offset+v.Size() {
				params[name] = true
			}
		}
	}
	return params, maps
}

func programTypes(obj *bpf.Object) string {
	var s []string
	for _, p := range obj.Programs {
		s = append(s, p.Function+" ("+p.Type+")")
	}
	return strings.Join(s, ", ")
}

func hookList(hs []bpf.Hook) string {
	if len(hs) == 0 {
		return "no hook kfm chains"
	}
	var s []string
	for _, h := range hs {
		s = append(s, string(h))
	}
	return strings.Join(s, ", ")
}

func paramList(obj *bpf.Object) string {
	if len(obj.Params) == 0 {
		return "none"
	}
	var s []string
	for _, p := range obj.Params {
		s = append(s, p.Name)
	}
	return strings.Join(s, ", ")
}

// validate checks that a bundle's config matches its object: what install
// relies on. Used for every pulled kfm bundle.
func validate(obj *bpf.Object, cfg *Config) error {
	for _, pc := range cfg.Programs {
		p, err := obj.Program(pc.Function)
		if err != nil {
			return fmt.Errorf("the config lists program %s: %w", pc.Function, err)
		}
		if pc.Type != "" && pc.Type != p.Type {
			return fmt.Errorf("program %s: the config says type %s, the object has %s", pc.Function, pc.Type, p.Type)
		}
		for _, h := range pc.Hooks {
			if !slices.Contains(p.Hooks, h) {
				return fmt.Errorf("program %s: hook %s does not fit a %s program", pc.Function, h, p.Type)
			}
		}
		for _, h := range pc.Hooks {
			if _, err := pc.ProceedOnActions(h); err != nil {
				return fmt.Errorf("program %s: proceedOn: %w", pc.Function, err)
			}
		}
		for _, pa := range pc.Params {
			if _, ok := obj.Param(pa.Name); !ok {
				return fmt.Errorf("program %s: param %s is not a volatile const global of the object", pc.Function, pa.Name)
			}
		}
	}
	return nil
}
