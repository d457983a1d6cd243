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
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/verify"
)

// inspectedBundle is what inspect reports for a reference: the bundle and
// the signatures found for its digest.
type inspectedBundle struct {
	Bundle     *registry.Bundle
	Signatures *bundleSignatures
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
the cache only. bpfman bytecode images are shown the same way.`,
		Example: `  kfm inspect examples/programs/xdp_ratelimit.o
  kfm inspect registry.example.com/net/ratelimit:1.2.0
  kfm inspect registry.example.com/net/ratelimit@sha256:... -o json`,
		Args: exactArgs(1, "one object file or reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			arg := args[0]
			if isObjectPath(arg) {
				obj, err := bpf.ReadObject(arg)
				if err != nil {
					return err
				}
				return g.report(obj, func(w io.Writer) error { return printObject(w, arg, obj) })
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
			return g.report(out, func(w io.Writer) error {
				if err := printBundle(w, b); err != nil {
					return err
				}
				return printSignatures(w, sigs)
			})
		},
	}
	rf.add(cmd, true)
	cmd.Flags().StringVar(&policyPath, "policy", "", "trust policy to check signatures against (default <config-dir>/policy.yaml)")
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
		cfg.Name, orDash(cfg.Version), orDash(cfg.Description), orDash(cfg.License), orDash(cfg.Source))
	fmt.Fprintf(w, "  digest:       %s\n  format:       %s\n  object:       %s (%s, %d bytes)\n",
		b.Digest, b.Format, b.ObjectName, b.ObjectDigest, len(b.Object))
	if created := b.Manifest.Annotations[registry.AnnotationCreated]; created != "" {
		fmt.Fprintf(w, "  created:      %s\n", created)
	}

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
	return tw.Flush()
}
