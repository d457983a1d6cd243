package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
)

func newShowCommand(g *globals) *cobra.Command {
	var (
		rf         registryFlags
		policyPath string
	)
	cmd := &cobra.Command{
		Use:   "show REF",
		Short: "Show the page of a bundle: versions and signers, metadata, programs, params, maps, readme",
		Long: `show prints everything a registry says about one bundle: its versions (tags,
newest first, at most 50) with who signed each as the local trust policy sees
it (--policy, default <config-dir>/policy.yaml), and for the latest version
(or the tag or digest REF names) the publisher's metadata, programs with
hooks, params and maps, and the readme, rendered for a terminal (raw markdown
with -o json). Only manifests, configs and the readme are read, never the
object, and nothing is cached. What the publisher wrote is for display; kfm
decides on what it computes from the object itself.`,
		Example: `  kfm show registry.example.com/net/xdp-ratelimit
  kfm show registry.example.com/net/xdp-ratelimit:1.0.0 -o json`,
		Args: exactArgs(1, "one reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			c, err := g.registryClient(ctx, &rf, false)
			if err != nil {
				return err
			}
			checker, err := g.loadChecker(ctx, c, policyPath)
			if err != nil {
				return err
			}
			page, err := catalog.ReadPage(ctx, c, ref, hasTagOrDigest(args[0]), checker, catalog.Options{})
			if err != nil {
				return registryError(err)
			}
			return g.report(page, func(w io.Writer) error { return printPage(w, page) })
		},
	}
	rf.add(cmd, false)
	cmd.Flags().StringVar(&policyPath, "policy", "", "trust policy to check signatures against (default <config-dir>/policy.yaml)")
	return cmd
}

// hasTagOrDigest reports whether a reference string names a tag or digest
// (ParseReference fills in "latest" otherwise).
func hasTagOrDigest(s string) bool {
	if strings.Contains(s, "@") {
		return true
	}
	return strings.LastIndexByte(s, ':') > strings.LastIndexByte(s, '/')
}

func printPage(w io.Writer, p *catalog.Page) error {
	md := p.Metadata
	cfg := md.Config
	fmt.Fprintf(w, "%s %s\n", clean(cfg.Name), p.Shown)
	fmt.Fprintf(w, "  %s\n", p.Repository)
	if cfg.Description != "" {
		fmt.Fprintf(w, "  %s\n", clean(cfg.Description))
	}
	fmt.Fprintln(w)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-12s %s\n", k+":", clean(v))
		}
	}
	row("latest", p.Latest)
	row("digest", md.Reference.Digest.String())
	row("license", cfg.License)
	row("homepage", cfg.Homepage)
	row("source", cfg.Source)
	row("authors", strings.Join(cfg.Authors, ", "))
	row("keywords", strings.Join(cfg.Keywords, ", "))
	row("categories", strings.Join(cfg.Categories, ", "))
	row("created", md.Manifest.Annotations[registry.AnnotationCreated])
	fmt.Fprintf(w, "  %-12s kfm install %s:%s --iface IF\n", "install:", p.Repository, p.Shown)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nVERSIONS\n  TAG\tDIGEST\tSIGNATURE\n")
	for _, v := range p.Versions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.Tag, v.Descriptor.Digest, oneLine(trustText(v.Trust), 160))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p.MoreVersions > 0 {
		fmt.Fprintf(w, "  and %d older versions\n", p.MoreVersions)
	}
	if err := printConfigTables(w, cfg); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nCAPABILITIES\n")
	for i := range cfg.Programs {
		caps, computed := capabilitiesOf(&cfg.Programs[i])
		switch {
		case !computed:
			fmt.Fprintf(w, "  %s: not recorded (published by an older kfm; kfm inspect computes them from the object)\n", cfg.Programs[i].Function)
		case len(caps) == 0:
			fmt.Fprintf(w, "  %s: none\n", cfg.Programs[i].Function)
		default:
			fmt.Fprintf(w, "  %s:\n", cfg.Programs[i].Function)
			for _, c := range caps {
				fmt.Fprintf(w, "    %s\n", clean(c))
			}
		}
	}
	if md.Readme != "" {
		fmt.Fprintf(w, "\nREADME\n%s", terminalMarkdown(md.Readme))
	}
	return nil
}

// capabilitiesOf lists what a program can do inside the kernel as the
// bundle records it (kfm publish computes it from the bytecode; see
// bpf/analyze), one line per fact, for kfm show and kfm catalog build.
// known is false for bundles published before kfm recorded capabilities.
// This is display only: kfm computes the facts again from the object
// whenever it decides anything (policy, compatibility).
func capabilitiesOf(p *registry.ProgramConfig) (lines []string, known bool) {
	c := p.Capabilities
	if c == nil {
		return nil, false
	}
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	add("program type %s, %d instructions (%d with subprograms)", c.Type, c.Instructions, c.TotalInstructions)
	if len(c.Helpers) > 0 {
		add("helpers: %s", strings.Join(c.Helpers, ", "))
	}
	if len(c.Kfuncs) > 0 {
		add("kfuncs: %s", strings.Join(c.Kfuncs, ", "))
	}
	if len(c.MapTypes) > 0 {
		add("map types: %s", strings.Join(c.MapTypes, ", "))
	}
	for _, f := range []struct {
		on   bool
		text string
	}{
		{c.WritesPacket, "writes packet data"},
		{c.AdjustsPacket, "adjusts packet head, tail or metadata"},
		{c.Redirects, "redirects packets"},
		{c.WritesContext, "writes packet metadata"},
		{c.TailCalls, "makes tail calls"},
	} {
		if f.on {
			add("%s", f.text)
		}
	}
	if c.ReturnsKnown {
		var vs []string
		for _, r := range c.Returns {
			vs = append(vs, verdictText(c, r))
		}
		add("returns %s", strings.Join(vs, ", "))
	}
	if c.ReadOnlyObserver {
		add("read-only observer (proven: never writes, never redirects, returns only pass)")
	}
	return lines, true
}

var (
	mdLink   = regexp.MustCompile(`!?\[([^\]]*)\]\(([^)\s]+)[^)]*\)`)
	mdStrong = regexp.MustCompile(`\*\*([^*]+)\*\*|__([^_]+)__`)
	mdCode   = regexp.MustCompile("`([^`]+)`")
	mdHTML   = regexp.MustCompile(`</?[A-Za-z][^>]*>`)
	mdList   = regexp.MustCompile(`^(\s*)[-*+] `)
)

// terminalMarkdown renders markdown for a terminal, reasonably: headings
// in capitals, code blocks indented as they are, links as "text <url>",
// emphasis and HTML tags dropped, control characters removed; every line
// indented by two spaces.
func terminalMarkdown(src string) string {
	var b strings.Builder
	inCode := false
	for _, line := range strings.Split(clean(strings.ReplaceAll(src, "\r\n", "\n")), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			inCode = !inCode
			continue
		}
		if inCode {
			b.WriteString("      " + line + "\n")
			continue
		}
		if h := strings.TrimLeft(trimmed, "#"); h != trimmed && strings.HasPrefix(h, " ") {
			text := strings.TrimSpace(h)
			if len(trimmed)-len(h) <= 2 {
				text = strings.ToUpper(text)
			}
			b.WriteString("\n  " + inline(text) + "\n")
			continue
		}
		line = mdList.ReplaceAllString(line, "$1• ")
		b.WriteString("  " + inline(line) + "\n")
	}
	return b.String()
}

func inline(s string) string {
	s = mdHTML.ReplaceAllString(s, "")
	s = mdLink.ReplaceAllStringFunc(s, func(m string) string {
		sub := mdLink.FindStringSubmatch(m)
		if strings.HasPrefix(m, "!") {
			return "[image: " + sub[1] + "]"
		}
		if sub[1] == sub[2] {
			return "<" + sub[2] + ">"
		}
		return sub[1] + " <" + sub[2] + ">"
	})
	s = mdStrong.ReplaceAllString(s, "$1$2")
	return mdCode.ReplaceAllString(s, "$1")
}
