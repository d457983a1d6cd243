package registry

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Categories is the vocabulary of bundle categories: what a program is for,
// as the catalog site and `kfm search` filter by it. bundle.yaml may only
// use these (a typo would hide a bundle from its filter); readers keep
// categories they do not know, so that a newer kfm may add to the list.
var Categories = []string{
	"ratelimit",     // rate and connection limits, policing
	"firewall",      // filters, ACLs, drop rules
	"ddos",          // flood and attack mitigation
	"loadbalancer",  // L3/L4 load balancing
	"nat",           // address and port translation
	"routing",       // forwarding, redirects between interfaces
	"tunneling",     // encapsulation and decapsulation
	"qos",           // marking, classification, shaping
	"observability", // counters, sampling, flow export
	"mirroring",     // packet copies to another interface or collector
	"security",      // everything else that protects a host
	"testing",       // samples, test programs, fault injection
}

// Limits of the metadata a publisher writes.
const (
	// MaxReadmeSize caps a bundle's readme (64 KiB).
	MaxReadmeSize = 64 << 10
	// MaxKeywords caps the keywords of a bundle; MaxKeywordLength each.
	MaxKeywords      = 32
	MaxKeywordLength = 64
	// MaxDescriptionLength caps the one-line description.
	MaxDescriptionLength = 512
)

// ReadmeMediaType is the media type of a bundle's optional readme layer: a
// UTF-8 markdown file (RFC 7763), at most MaxReadmeSize bytes, titled
// README.md. The readme travels as its own layer rather than in the config,
// so that search and the catalog read configs without it, and `oras pull`
// saves it as a file next to the object.
const ReadmeMediaType = "text/markdown"

// ReadmeTitle is the file name a readme layer is published under.
const ReadmeTitle = "README.md"

var keywordRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._+-]*$`)

// checkMetadata checks the publisher-written metadata of bundle.yaml.
func (bf *BundleFile) checkMetadata() error {
	if len(bf.Description) > MaxDescriptionLength || strings.ContainsAny(bf.Description, "\n\r") {
		return fmt.Errorf("description: one line of at most %d bytes (long text goes into the readme)", MaxDescriptionLength)
	}
	if len(bf.Keywords) > MaxKeywords {
		return fmt.Errorf("keywords: %d, at most %d allowed", len(bf.Keywords), MaxKeywords)
	}
	for _, k := range bf.Keywords {
		if len(k) > MaxKeywordLength || !keywordRe.MatchString(k) {
			return fmt.Errorf("keyword %q: use lower-case letters, digits and . _ + - (at most %d characters)", k, MaxKeywordLength)
		}
	}
	for _, c := range bf.Categories {
		if !slices.Contains(Categories, c) {
			return fmt.Errorf("category %q is not one kfm knows; use one of %s", c, strings.Join(Categories, ", "))
		}
	}
	for _, a := range bf.Authors {
		if strings.TrimSpace(a) == "" || strings.ContainsAny(a, "\n\r") {
			return fmt.Errorf("authors: each author is one non-empty line, e.g. \"Jane Doe <jane@example.com>\"")
		}
	}
	for field, u := range map[string]string{"homepage": bf.Homepage, "source": bf.Source} {
		if err := checkURL(u); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	if bf.License != "" {
		if err := CheckSPDX(bf.License); err != nil {
			return fmt.Errorf("license: %w", err)
		}
	}
	if len(bf.ReadmeData) > 0 {
		if err := checkReadme(bf.ReadmeData); err != nil {
			return fmt.Errorf("readme %s: %w", bf.Readme, err)
		}
	}
	return nil
}

func checkReadme(data []byte) error {
	if len(data) > MaxReadmeSize {
		return fmt.Errorf("%d bytes, at most %d (%d KiB) allowed", len(data), MaxReadmeSize, MaxReadmeSize>>10)
	}
	if !utf8.Valid(data) {
		return fmt.Errorf("not UTF-8 text")
	}
	return nil
}

// checkURL accepts "" and absolute http(s) URLs.
func checkURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

var kernelVersionRe = regexp.MustCompile(`^[0-9]+\.[0-9]+(\.[0-9]+)?$`)

// spdxID is a licence or exception identifier: letters, digits, '.' and '-'.
var spdxID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

// CheckSPDX checks the syntax of an SPDX licence expression (SPDX 2.3 annex
// D): identifiers, an optional "+", LicenseRef-... and
// DocumentRef-...:LicenseRef-... references, AND, OR and WITH (upper or
// lower case), and parentheses. It does not check identifiers against the
// SPDX licence list, which changes faster than kfm: "MIT" and
// "LicenseRef-acme" pass, "GPL v2" and "Dual BSD/GPL" do not.
func CheckSPDX(expr string) error {
	toks, err := spdxTokens(expr)
	if err != nil {
		return err
	}
	p := &spdxParser{toks: toks}
	if err := p.or(); err != nil {
		return fmt.Errorf("%q is not an SPDX licence expression: %w (e.g. \"GPL-2.0-only OR BSD-2-Clause\")", expr, err)
	}
	if p.i != len(p.toks) {
		return fmt.Errorf("%q is not an SPDX licence expression: unexpected %q (e.g. \"GPL-2.0-only OR BSD-2-Clause\")", expr, p.toks[p.i])
	}
	return nil
}

func spdxTokens(expr string) ([]string, error) {
	var toks []string
	for _, f := range strings.Fields(expr) {
		for f != "" {
			switch f[0] {
			case '(', ')':
				toks = append(toks, f[:1])
				f = f[1:]
				continue
			}
			end := strings.IndexAny(f, "()")
			if end < 0 {
				end = len(f)
			}
			toks = append(toks, f[:end])
			f = f[end:]
		}
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("empty licence expression")
	}
	return toks, nil
}

type spdxParser struct {
	toks []string
	i    int
}

func (p *spdxParser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func isOp(tok, op string) bool { return tok == op || tok == strings.ToLower(op) }

// or := and { OR and }
func (p *spdxParser) or() error {
	if err := p.and(); err != nil {
		return err
	}
	for isOp(p.peek(), "OR") {
		p.i++
		if err := p.and(); err != nil {
			return err
		}
	}
	return nil
}

// and := with { AND with }
func (p *spdxParser) and() error {
	if err := p.with(); err != nil {
		return err
	}
	for isOp(p.peek(), "AND") {
		p.i++
		if err := p.with(); err != nil {
			return err
		}
	}
	return nil
}

// with := primary [ WITH exception ]
func (p *spdxParser) with() error {
	if err := p.primary(); err != nil {
		return err
	}
	if isOp(p.peek(), "WITH") {
		p.i++
		exc := p.peek()
		if !spdxID.MatchString(exc) || isKeyword(exc) {
			return fmt.Errorf("WITH needs an exception identifier, got %q", exc)
		}
		p.i++
	}
	return nil
}

func isKeyword(tok string) bool {
	return isOp(tok, "AND") || isOp(tok, "OR") || isOp(tok, "WITH")
}

// primary := "(" or ")" | licence
func (p *spdxParser) primary() error {
	tok := p.peek()
	switch {
	case tok == "":
		return fmt.Errorf("the expression ends where a licence is expected")
	case tok == "(":
		p.i++
		if err := p.or(); err != nil {
			return err
		}
		if p.peek() != ")" {
			return fmt.Errorf("missing )")
		}
		p.i++
		return nil
	case isKeyword(tok) || tok == ")":
		return fmt.Errorf("%q where a licence is expected", tok)
	}
	p.i++
	id := strings.TrimSuffix(tok, "+")
	if doc, ref, ok := strings.Cut(id, ":"); ok {
		if !strings.HasPrefix(doc, "DocumentRef-") || !strings.HasPrefix(ref, "LicenseRef-") || !spdxID.MatchString(doc) || !spdxID.MatchString(ref) {
			return fmt.Errorf("%q: want DocumentRef-X:LicenseRef-Y", tok)
		}
		return nil
	}
	if !spdxID.MatchString(id) {
		return fmt.Errorf("%q is not a licence identifier (letters, digits, . and -)", tok)
	}
	return nil
}
