package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
	"github.com/kfm-project/kfm/verify"
)

// policyChecker tells search, show and the catalog who signed a bundle
// version, as the local trust policy sees it: signatures are read from the
// registry (referrers and the legacy tag) and verified with verify.Verify,
// the manifest only (SkipContent: configs and objects are not downloaded).
type policyChecker struct {
	client *registry.Client
	policy *verify.Policy // nil: no policy, nothing is checked
	source string
}

// loadChecker loads the trust policy (--policy, else
// <config-dir>/policy.yaml). A missing default policy is no error: every
// version shows as "not checked".
func (g *globals) loadChecker(ctx context.Context, c *registry.Client, policyPath string) (*policyChecker, error) {
	explicit := policyPath != ""
	if !explicit {
		policyPath = filepath.Join(g.configDir, "policy.yaml")
	}
	p, err := verify.LoadPolicy(ctx, policyPath)
	switch {
	case err == nil:
		return &policyChecker{client: c, policy: p, source: policyPath}, nil
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		return &policyChecker{client: c, source: policyPath}, nil
	default:
		return nil, err
	}
}

func (p *policyChecker) Check(ctx context.Context, ref registry.Reference, desc ocispec.Descriptor) catalog.Trust {
	if p.policy == nil {
		return catalog.Trust{Status: catalog.TrustUnknown, Reason: "no trust policy at " + p.source}
	}
	repo, err := p.client.Repository(ctx, ref)
	if err != nil {
		return catalog.Trust{Status: catalog.TrustUnknown, Reason: err.Error()}
	}
	res, err := verify.Verify(ctx, repo, ref.Repo()+"@"+desc.Digest.String(), desc, p.policy, &verify.VerifyOptions{SkipContent: true})
	t := catalog.Trust{}
	if res != nil {
		t.Rule = res.Rule
	}
	switch {
	case err == nil:
		t.Status, t.Signer = catalog.TrustAccepted, res.Signer.String()
	case errors.Is(err, verify.ErrUnsigned):
		t.Status = catalog.TrustUnsigned
	case errors.Is(err, verify.ErrUntrusted), errors.Is(err, verify.ErrInvalidSignature):
		t.Status, t.Reason = catalog.TrustRefused, err.Error()
		for _, s := range res.Signatures {
			if who := firstSigner(s); who != nil {
				t.Signer = who.String()
				break
			}
		}
	default:
		t.Status, t.Reason = catalog.TrustUnknown, err.Error()
	}
	return t
}

func firstSigner(s verify.Signature) *verify.Signer {
	if s.Signer != nil {
		return s.Signer
	}
	return s.Claimed
}

var longDigest = regexp.MustCompile(`(sha256:[0-9a-f]{12})[0-9a-f]{52}`)

// shortTrustText is trustText with key fingerprints cut to 12 hex digits,
// for the search table.
func shortTrustText(t catalog.Trust) string {
	return longDigest.ReplaceAllString(trustText(t), "$1")
}

// trustText is the one-line form of a trust status for tables.
func trustText(t catalog.Trust) string {
	switch t.Status {
	case catalog.TrustAccepted:
		return "signed: " + t.Signer
	case catalog.TrustUnsigned:
		return "unsigned"
	case catalog.TrustRefused:
		if t.Signer != "" {
			return "refused (" + t.Signer + ")"
		}
		return "refused"
	default:
		return "not checked"
	}
}

// controlChars are bytes a terminal would interpret (escape sequences);
// publisher-written text is printed without them.
var controlChars = regexp.MustCompile("[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f]")

// clean makes publisher-written text safe for a terminal.
func clean(s string) string { return controlChars.ReplaceAllString(s, "") }

// oneLine cleans s and cuts it to n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(clean(s)), " ")
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// parseNamespaces parses --registry values.
func parseNamespaces(values []string) ([]catalog.Namespace, error) {
	if len(values) == 0 {
		return nil, usageErrorf("name at least one registry with --registry HOST/NAMESPACE")
	}
	var out []catalog.Namespace
	for _, v := range values {
		ns, err := catalog.ParseNamespace(v)
		if err != nil {
			return nil, usageError{fmt.Errorf("--registry: %w", err)}
		}
		out = append(out, ns)
	}
	return out, nil
}
