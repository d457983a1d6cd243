package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/analyze"
	"github.com/kfm-project/kfm/bpf/compat"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/verify"
)

// inspectedBundle is what inspect reports for a reference: the bundle and
// the signatures found for its digest.
type inspectedBundle struct {
	Bundle     *registry.Bundle
	Signatures *bundleSignatures
	// Capabilities and Kernel: see inspectedObject.
	Capabilities map[string]*analyze.Capabilities
	Kernel       []*compat.Report
	functions    []string
}

// inspectedObject is what inspect reports for an object file: the object,
// the capabilities kfm computes for each program (in program order), with
// --kernel whether each would run on this host, and the metrics its
// bundle.yaml (beside it) declares.
type inspectedObject struct {
	*bpf.Object
	Capabilities map[string]*analyze.Capabilities
	Kernel       []*compat.Report
	Metrics      []declaredMetric
	functions    []string
}

// MarshalJSON writes the bundle's own JSON with a "signatures" member.
func (ib inspectedBundle) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(ib.Bundle)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, err
	}
	if fields["signatures"], err = json.Marshal(ib.Signatures); err != nil {
		return nil, err
	}
	if fields["capabilities"], err = json.Marshal(ib.Capabilities); err != nil {
		return nil, err
	}
	if ib.Kernel != nil {
		if fields["kernel"], err = json.Marshal(ib.Kernel); err != nil {
			return nil, err
		}
	}
	return json.Marshal(fields)
}

type bundleSignatures struct {
	// Policy is the trust policy the signatures were checked against
	// ("" when there is none: signatures are listed, not checked).
	Policy string `json:"policy,omitempty"`
	*verify.Result
	// Refused is empty when a signature verified under the policy, else
	// why the bundle would be refused.
	Refused string `json:"refused,omitempty"`
	// CacheOnly is set when the registry could not be asked for the
	// signatures (it names why): those shown are the ones in the cache.
	CacheOnly string `json:"cacheOnly,omitempty"`
}

func newInspectCommand(g *globals) *cobra.Command {
	var (
		rf         registryFlags
		policyPath string
		kernel     bool
	)
	cmd := &cobra.Command{
		Use:   "inspect FILE.o|REF",
		Short: "Describe a BPF object or a bundle: programs, params, maps, licence, run config",
		Long: `inspect describes a BPF object file or a published bundle.

For an object: its entry functions with program type and section, the
parameters a user may set at install time (volatile const globals) with their
types and defaults, its maps, licence, whether it has BTF, and libxdp's
XDP_RUN_CONFIG metadata when present.

For a reference (registry/repository:tag or @digest): the bundle's metadata,
digest, programs with hooks, default priority and proceed-on verdicts, params
with defaults and descriptions, and maps, and the signatures found for its
digest, checked against the trust policy (<config-dir>/policy.yaml, or
--policy) when there is one. The reference is looked up in the local cache
first, then in the registry (which pulls it into the cache); with --offline
only the cache is used. When the registry cannot be reached, the signatures
cached with the bundle are checked and the output says that they come from
the cache only. bpfman bytecode images are shown the same way.

Both show each program's capabilities, computed by kfm from the object's
bytecode (never taken from the bundle): helpers and kfuncs called, map
types, whether it may write or adjust the packet, write packet metadata,
redirect or tail-call, the verdicts it returns, instruction counts, and
whether it is a proven read-only observer. These are what the capability
rules of policy.yaml are checked against.

--kernel also probes the running kernel: whether each program would run on
this host (program type, helpers, kernel BTF, the publisher's minimum
kernel), and if not, what is missing.`,
		Example: `  kfm inspect examples/programs/xdp_ratelimit.o
  kfm inspect registry.example.com/net/ratelimit:1.2.0
  kfm inspect registry.example.com/net/ratelimit@sha256:... -o json
  kfm inspect registry.example.com/net/ratelimit:1.2.0 --kernel`,
		Args: exactArgs(1, "one object file or reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			arg := args[0]
			if isObjectPath(arg) {
				obj, err := bpf.ReadObject(arg)
				if err != nil {
					return err
				}
				declared, err := objectMetrics(obj, arg)
				if err != nil {
					return err
				}
				out := inspectedObject{Object: obj, Metrics: declared}
				if out.functions, out.Capabilities, out.Kernel, err = programFacts(obj, nil, kernel); err != nil {
					return err
				}
				return g.report(out, func(w io.Writer) error {
					if err := printObject(w, arg, obj); err != nil {
						return err
					}
					if err := printFacts(w, out.functions, out.Capabilities, out.Kernel); err != nil {
						return err
					}
					return printMetrics(w, declared)
				})
			}
			ref, err := parseRef(arg)
			if err != nil {
				return usageErrorf("%s is neither an object file nor a reference: %v", arg, err)
			}
			ctx := cmd.Context()
			c, err := g.registryClient(ctx, &rf, true)
			if err != nil {
				return err
			}
			// The cache first: no network for what was pulled before.
			b, err := c.Pull(ctx, ref, registry.PullOptions{Offline: true})
			if errors.Is(err, registry.ErrNotCached) && !rf.offline {
				b, err = c.Pull(ctx, ref, registry.PullOptions{})
			}
			if err != nil {
				return registryError(err)
			}
			sigs, err := g.bundleSignatures(cmd, c, b, policyPath, rf.offline)
			if err != nil {
				return err
			}
			out := inspectedBundle{Bundle: b, Signatures: sigs}
			obj, err := bpf.ParseObject(b.Reference.String(), b.Object)
			if err != nil {
				return err
			}
			if out.functions, out.Capabilities, out.Kernel, err = programFacts(obj, b.Config, kernel); err != nil {
				return err
			}
			return g.report(out, func(w io.Writer) error {
				if err := printBundle(w, b); err != nil {
					return err
				}
				if err := printFacts(w, out.functions, out.Capabilities, out.Kernel); err != nil {
					return err
				}
				return printSignatures(w, sigs)
			})
		},
	}
	rf.add(cmd, true)
	cmd.Flags().StringVar(&policyPath, "policy", "", "trust policy to check signatures against (default <config-dir>/policy.yaml)")
	cmd.Flags().BoolVar(&kernel, "kernel", false, "also say whether each program would run on this host's kernel, and why not")
	return cmd
}

// bundleSignatures copies the bundle's signatures into the cache (unless
// offline) and checks them against the policy, or only lists them when
// there is no policy.
func (g *globals) bundleSignatures(cmd *cobra.Command, c *registry.Client, b *registry.Bundle, policyPath string, offline bool) (*bundleSignatures, error) {
	ctx := cmd.Context()
	var cacheOnly string
	if !offline {
		// A registry that cannot be reached does not hide what the
		// cache holds (signatures are cached with the bundle): the
		// signatures are checked from there, and the output says so.
		if _, err := c.FetchReferrers(ctx, b.Reference); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("fetch the signatures of %s: %w", b.Reference, err)
			}
			cacheOnly = fmt.Sprintf("the registry could not be asked (%v)", err)
			fmt.Fprintf(cmd.ErrOrStderr(), "kfm: %s: signatures from the cache only: %s\n", b.Reference, cacheOnly)
		}
	}
	explicit := policyPath != ""
	if !explicit {
		policyPath = filepath.Join(g.configDir, "policy.yaml")
	}
	out := &bundleSignatures{Policy: policyPath, CacheOnly: cacheOnly}
	policy, err := verify.LoadPolicy(ctx, policyPath)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		out.Policy = ""
		policy = &verify.Policy{Source: "no policy"} // lists signatures, accepts none
	default:
		return nil, err
	}
	res, verr := verify.Verify(ctx, c.Cache(), b.Reference.String(), b.Descriptor(), policy, &verify.VerifyOptions{FullReferenceTags: true, SkipContent: true})
	out.Result = res
	if verr != nil && out.Policy != "" {
		out.Refused = verr.Error()
	}
	return out, nil
}

func printSignatures(w io.Writer, s *bundleSignatures) error {
	if s.Policy == "" {
		fmt.Fprintf(w, "\nSIGNATURES (no trust policy: listed, not checked)\n")
	} else {
		fmt.Fprintf(w, "\nSIGNATURES (checked against %s)\n", s.Policy)
	}
	if s.CacheOnly != "" {
		fmt.Fprintf(w, "  from the cache only: %s\n", s.CacheOnly)
	}
	if len(s.Signatures) == 0 {
		fmt.Fprintln(w, "  none: the bundle is unsigned")
	} else if err := printSignatureTable(w, s); err != nil {
		return err
	}
	switch {
	case s.Policy == "":
	case s.Result.Signer != nil:
		fmt.Fprintf(w, "  accepted: %s (rule %s)\n", s.Result.Signer, s.Result.Rule)
	default:
		fmt.Fprintf(w, "  refused: %s\n", s.Refused)
	}
	return nil
}

func printSignatureTable(w io.Writer, s *bundleSignatures) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FORMAT\tKIND\tSIGNER\tVERIFIED\tNOTE")
	for _, sig := range s.Signatures {
		who := sig.Signer
		if who == nil {
			who = sig.Claimed
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%s\n", sig.Format, orDash(sig.Kind), orDash(signerText(who)), sig.Verified, orDash(sig.Problem))
	}
	return tw.Flush()
}

func signerText(s *verify.Signer) string {
	if s == nil {
		return ""
	}
	return s.String()
}

// isObjectPath tells a local file from a reference: an existing file, or a
// name ending in .o.
func isObjectPath(s string) bool {
	if st, err := os.Stat(s); err == nil && st.Mode().IsRegular() {
		return true
	}
	return strings.HasSuffix(s, ".o")
}

func printObject(w io.Writer, name string, o *bpf.Object) error {
	yesNo := map[bool]string{true: "yes", false: "no"}
	fmt.Fprintf(w, "%s\n", name)
	fmt.Fprintf(w, "  sha256:   %s\n  size:     %d bytes\n  license:  %s\n  btf:      %s\n", o.SHA256, o.Size, o.License, yesNo[o.BTF])

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nPROGRAMS\n  FUNCTION\tSECTION\tTYPE\tHOOKS\tPRIORITY\tPROCEED-ON\n")
	for _, p := range o.Programs {
		prio, proceed := "-", "-"
		if p.Type == "xdp" {
			rc, declared := o.RunConfigFor(p.Function)
			src := " (default)"
			if declared {
				src = " (XDP_RUN_CONFIG)"
			}
			prio = fmt.Sprintf("%d%s", rc.Priority, src)
			proceed = strings.Join(rc.ProceedOn.Names(bpf.HookXDP), ",")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", p.Function, p.Section, p.Type, hooksText(p.Hooks), prio, proceed)
	}
	if len(o.Params) > 0 {
		fmt.Fprintf(tw, "\nPARAMS\n  NAME\tTYPE\tDEFAULT\n")
		for _, p := range o.Params {
			fmt.Fprintf(tw, "  %s\t%s\t%v\n", p.Name, p.Type, p.Default)
		}
	}
	if len(o.Maps) > 0 {
		fmt.Fprintf(tw, "\nMAPS\n  NAME\tTYPE\tKEY\tVALUE\tMAX-ENTRIES\tPINNING\n")
		for _, m := range o.Maps {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%s\n", m.Name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Pinning)
		}
	}
	return tw.Flush()
}

func hooksText(hs []bpf.Hook) string {
	if len(hs) == 0 {
		return "(not chainable)"
	}
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = string(h)
	}
	return strings.Join(s, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printBundle(w io.Writer, b *registry.Bundle) error {
	cfg := b.Config
	fmt.Fprintf(w, "%s\n", b.Reference)
	fmt.Fprintf(w, "  name:         %s\n  version:      %s\n  description:  %s\n  license:      %s\n  source:       %s\n",
		clean(cfg.Name), orDash(clean(cfg.Version)), orDash(clean(cfg.Description)), orDash(clean(cfg.License)), orDash(clean(cfg.Source)))
	fmt.Fprintf(w, "  digest:       %s\n  format:       %s\n  object:       %s (%s, %d bytes)\n",
		b.Digest, b.Format, b.ObjectName, b.ObjectDigest, len(b.Object))
	if created := b.Manifest.Annotations[registry.AnnotationCreated]; created != "" {
		fmt.Fprintf(w, "  created:      %s\n", created)
	}
	for _, kv := range [][2]string{
		{"homepage", cfg.Homepage},
		{"authors", strings.Join(cfg.Authors, ", ")},
		{"keywords", strings.Join(cfg.Keywords, ", ")},
		{"categories", strings.Join(cfg.Categories, ", ")},
	} {
		if kv[1] != "" {
			fmt.Fprintf(w, "  %-13s %s\n", kv[0]+":", clean(kv[1]))
		}
	}
	if b.Readme != "" {
		fmt.Fprintf(w, "  readme:       %d bytes (kfm show prints it)\n", len(b.Readme))
	}

	return printConfigTables(w, cfg)
}

// printConfigTables prints the programs, params and maps of a bundle config.
func printConfigTables(w io.Writer, cfg *registry.Config) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nPROGRAMS\n  FUNCTION\tTYPE\tHOOKS\tPRIORITY\tPROCEED-ON\tREQUIRES\n")
	for _, p := range cfg.Programs {
		req := strings.Join(p.RequiredFeatures, ",")
		if p.MinKernel != "" {
			req = strings.TrimPrefix(req+",kernel>="+p.MinKernel, ",")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", p.Function, p.Type, hooksText(p.Hooks), p.Priority, orDash(strings.Join(p.ProceedOn, ",")), orDash(req))
	}
	var params, maps bool
	for _, p := range cfg.Programs {
		params = params || len(p.Params) > 0
		maps = maps || len(p.Maps) > 0
	}
	if params {
		fmt.Fprintf(tw, "\nPARAMS\n  PROGRAM\tNAME\tTYPE\tDEFAULT\tDESCRIPTION\n")
		for _, p := range cfg.Programs {
			for _, pa := range p.Params {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%s\n", p.Function, pa.Name, pa.Type, pa.Default, orDash(pa.Description))
			}
		}
	}
	if maps {
		fmt.Fprintf(tw, "\nMAPS\n  PROGRAM\tNAME\tTYPE\tPINNING\n")
		for _, p := range cfg.Programs {
			for _, m := range p.Maps {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", p.Function, m.Name, m.Type, m.Pinning)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var declared []declaredMetric
	for _, p := range cfg.Programs {
		for _, m := range p.Metrics {
			declared = append(declared, declaredMetric{Program: p.Function, MetricConfig: m})
		}
	}
	return printMetrics(w, declared)
}

// declaredMetric is a metric a publisher declared, with its program.
type declaredMetric struct {
	Program string `json:"program"`
	registry.MetricConfig
}

// MarshalJSON puts program beside the declaration's own fields.
func (d declaredMetric) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(d.MetricConfig)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, err
	}
	fields["program"], _ = json.Marshal(d.Program)
	return json.Marshal(fields)
}

// MarshalJSON writes the object's JSON with "metrics", "capabilities" and
// "kernel" members.
func (o inspectedObject) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(o.Object)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, err
	}
	if o.Metrics == nil {
		o.Metrics = []declaredMetric{}
	}
	if fields["metrics"], err = json.Marshal(o.Metrics); err != nil {
		return nil, err
	}
	if fields["capabilities"], err = json.Marshal(o.Capabilities); err != nil {
		return nil, err
	}
	if o.Kernel != nil {
		if fields["kernel"], err = json.Marshal(o.Kernel); err != nil {
			return nil, err
		}
	}
	return json.Marshal(fields)
}

// objectMetrics reads the metric declarations of the bundle.yaml beside an
// object (chain.BundleFileFor), checked against the object's BTF.
func objectMetrics(obj *bpf.Object, path string) ([]declaredMetric, error) {
	bfPath := chain.BundleFileFor(path)
	bf, err := registry.ReadBundleFile(bfPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []declaredMetric
	for _, p := range bf.Programs {
		for _, m := range p.Metrics {
			if _, err := m.Layout(obj); err != nil {
				return nil, fmt.Errorf("%s: program %s: %w", bfPath, p.Function, err)
			}
			out = append(out, declaredMetric{Program: p.Function, MetricConfig: m})
		}
	}
	return out, nil
}

func printMetrics(w io.Writer, ms []declaredMetric) error {
	if len(ms) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nMETRICS\n  PROGRAM\tNAME\tTYPE\tMAP\tVALUE\tLABELS\tHELP\n")
	for _, m := range ms {
		var labels []string
		for _, l := range m.Labels {
			switch l.Field {
			case "", l.Name:
				labels = append(labels, l.Name)
			default:
				labels = append(labels, l.Name+"="+l.Field)
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Program, m.Name, m.Type, m.Map,
			orDash(m.Value), orDash(strings.Join(labels, ",")), orDash(m.Help))
	}
	return tw.Flush()
}

// programFacts computes the capabilities of every program of obj (by
// function; functions in object order) and, with kernel, checks each
// against the running kernel, with the minimum kernel cfg declares for it
// when cfg is a bundle's config.
func programFacts(obj *bpf.Object, cfg *registry.Config, kernel bool) ([]string, map[string]*analyze.Capabilities, []*compat.Report, error) {
	spec, err := obj.Spec(nil)
	if err != nil {
		return nil, nil, nil, err
	}
	var names []string
	caps := map[string]*analyze.Capabilities{}
	var reports []*compat.Report
	for _, p := range obj.Programs {
		c, err := analyze.Program(spec, p.Function)
		if err != nil {
			return nil, nil, nil, err
		}
		names = append(names, p.Function)
		caps[p.Function] = c
		if !kernel {
			continue
		}
		minKernel := ""
		if cfg != nil {
			if pc, err := cfg.Program(p.Function); err == nil {
				minKernel = pc.MinKernel
			}
		}
		r, err := compat.Check(spec, p.Function, minKernel)
		if err != nil {
			return nil, nil, nil, err
		}
		reports = append(reports, r)
	}
	return names, caps, reports, nil
}

// printFacts writes the CAPABILITIES section (and KERNEL with --kernel).
func printFacts(w io.Writer, functions []string, caps map[string]*analyze.Capabilities, kernel []*compat.Report) error {
	fmt.Fprintf(w, "\nCAPABILITIES (computed by kfm from the bytecode)\n")
	yes := map[bool]string{true: "yes", false: "no"}
	for _, fn := range functions {
		c := caps[fn]
		returns := "not known (computed at run time)"
		if c.ReturnsKnown {
			var vs []string
			for _, r := range c.Returns {
				vs = append(vs, verdictText(c, r))
			}
			returns = strings.Join(vs, ", ")
		}
		fmt.Fprintf(w, "  %s (%s)\n", fn, c.Type)
		fmt.Fprintf(w, "    instructions:    %d (%d with subprograms)\n", c.Instructions, c.TotalInstructions)
		fmt.Fprintf(w, "    helpers:         %s\n", orDash(strings.Join(c.Helpers, ", ")))
		if len(c.Kfuncs) > 0 {
			fmt.Fprintf(w, "    kfuncs:          %s\n", strings.Join(c.Kfuncs, ", "))
		}
		fmt.Fprintf(w, "    map types:       %s\n", orDash(strings.Join(c.MapTypes, ", ")))
		fact := func(label string, v bool, key string) {
			s := yes[v]
			if v && c.Why[key] != "" {
				s += " (" + c.Why[key] + ")"
			}
			fmt.Fprintf(w, "    %-17s%s\n", label+":", s)
		}
		fact("writes packet", c.WritesPacket, analyze.FactWritesPacket)
		fact("adjusts packet", c.AdjustsPacket, analyze.FactAdjustsPacket)
		fact("redirects", c.Redirects, analyze.FactRedirects)
		fact("writes metadata", c.WritesContext, analyze.FactWritesContext)
		if c.TailCalls {
			fact("tail calls", true, analyze.FactTailCalls)
		}
		fmt.Fprintf(w, "    returns:         %s\n", returns)
		obs := "yes (proven)"
		if !c.ReadOnlyObserver {
			obs = "no: " + c.Why[analyze.FactReadOnlyObserver]
		}
		fmt.Fprintf(w, "    read-only:       %s\n", obs)
	}
	if kernel == nil {
		return nil
	}
	fmt.Fprintf(w, "\nKERNEL (%s)\n", compat.Release())
	for _, r := range kernel {
		if r.OK {
			fmt.Fprintf(w, "  %s: runs on this host\n", r.Program)
		} else {
			fmt.Fprintf(w, "  %s: cannot run: lacks %s\n", r.Program, strings.Join(r.Missing, "; "))
		}
		for _, u := range r.Unknown {
			fmt.Fprintf(w, "    (not probed: %s)\n", u)
		}
	}
	return nil
}

// verdictText names a verdict the way --proceed-on spells it.
func verdictText(c *analyze.Capabilities, v int32) string {
	h := bpf.HookXDP
	if c.Type != "xdp" {
		h = bpf.HookTCIngress
	}
	return bpf.ActionName(h, bpf.Action(v))
}
