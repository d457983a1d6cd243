package catalog

import (
	"context"
	"sort"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/registry"
)

// Trust is who signed a bundle version, as the local trust policy sees it.
type Trust struct {
	// Status is one of the Trust* constants.
	Status string `json:"status"`
	// Signer is the accepted signer (TrustAccepted), else a signer the
	// signatures claim, if any.
	Signer string `json:"signer,omitempty"`
	// Rule is the policy rule that decided.
	Rule string `json:"rule,omitempty"`
	// Reason says why the version is not accepted.
	Reason string `json:"reason,omitempty"`
}

// Trust statuses.
const (
	// TrustAccepted: a signature verified under the policy.
	TrustAccepted = "accepted"
	// TrustUnsigned: no signature at all.
	TrustUnsigned = "unsigned"
	// TrustRefused: signed, but the policy accepts none of the
	// signatures (or no rule matches, or a deny rule).
	TrustRefused = "refused"
	// TrustUnknown: the signatures could not be checked (no policy, or
	// the registry failed).
	TrustUnknown = "unknown"
)

// Checker says who signed the manifest desc of ref. kfm's implementation
// verifies signatures against the trust policy (package verify); the
// catalog itself decides nothing on signatures.
type Checker interface {
	Check(ctx context.Context, ref registry.Reference, desc ocispec.Descriptor) Trust
}

// Match reports whether b matches every one of terms (case-insensitive
// substrings of repository, name, description, keywords or categories; an
// exact keyword or category counts too). No terms match everything. The
// score orders results: name matches before the rest.
func Match(b *Bundle, terms []string) (score int, ok bool) {
	name, desc := "", ""
	var words []string
	if b.Config != nil {
		name, desc = b.Config.Name, b.Config.Description
		words = append(append(words, b.Config.Keywords...), b.Config.Categories...)
	}
	for _, t := range terms {
		t = strings.ToLower(strings.TrimSpace(t))
		if t == "" {
			continue
		}
		switch {
		case strings.EqualFold(name, t) || strings.EqualFold(lastElem(b.Repository), t):
			score += 100
		case strings.Contains(strings.ToLower(name), t) || strings.Contains(strings.ToLower(lastElem(b.Repository)), t):
			score += 50
		case containsFold(words, t):
			score += 20
		case strings.Contains(strings.ToLower(desc), t) || strings.Contains(strings.ToLower(b.Repository), t):
			score += 10
		default:
			return 0, false
		}
	}
	return score, true
}

func lastElem(repo string) string {
	if i := strings.LastIndexByte(repo, '/'); i >= 0 {
		return repo[i+1:]
	}
	return repo
}

func containsFold(words []string, t string) bool {
	for _, w := range words {
		if strings.Contains(strings.ToLower(w), t) {
			return true
		}
	}
	return false
}

// Result is one search hit.
type Result struct {
	Bundle
	// Trust is the latest version's signature status.
	Trust Trust `json:"trust"`
	// From is where the bundle was found: "index" or "catalog".
	From  string `json:"from"`
	score int
}

// Search matches terms against the bundles of the listings and checks the
// signatures of each hit's latest version with checker (nil: not checked),
// in parallel (opts.Concurrency). Hits are ordered by score, then
// repository; a repository listed twice (two namespaces that overlap)
// appears once.
func Search(ctx context.Context, listings []*Listing, terms []string, checker Checker, opts Options) []Result {
	seen := map[string]bool{}
	var out []Result
	for _, l := range listings {
		for _, b := range l.Bundles {
			if seen[b.Repository] {
				continue
			}
			if score, ok := Match(&b, terms); ok {
				seen[b.Repository] = true
				out = append(out, Result{Bundle: b, From: l.From, score: score})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].score != out[j].score {
			return out[i].score > out[j].score
		}
		return out[i].Repository < out[j].Repository
	})
	CheckAll(ctx, checker, len(out), func(i int) (registry.Reference, ocispec.Descriptor) { return out[i].Ref(), out[i].Descriptor },
		func(i int, t Trust) { out[i].Trust = t }, opts)
	if out == nil {
		out = []Result{}
	}
	return out
}

// CheckAll runs checker on n versions in parallel (opts.Concurrency at a
// time); a nil checker marks them all TrustUnknown.
func CheckAll(ctx context.Context, checker Checker, n int, at func(int) (registry.Reference, ocispec.Descriptor), set func(int, Trust), opts Options) {
	sem := make(chan struct{}, opts.concurrency())
	done := make(chan struct{})
	for i := 0; i < n; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			if checker == nil {
				set(i, Trust{Status: TrustUnknown, Reason: "signatures not checked"})
				return
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			ref, desc := at(i)
			set(i, checker.Check(ctx, ref, desc))
		}()
	}
	for i := 0; i < n; i++ {
		<-done
	}
}
