package ocilock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/verify"
)

// Defaults of Options.
const (
	DefaultInterval   = 30 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
)

// Options configure a Source.
type Options struct {
	Client *registry.Client
	// Policy is the node's trust policy; required.
	Policy *verify.Policy
	// Interval is the time between two checks of the tag; MaxBackoff the
	// longest wait while checks fail.
	Interval, MaxBackoff time.Duration
	Logger               *slog.Logger
	Metrics              *agent.Metrics
}

// Source follows one tag.
type Source struct {
	ref  registry.Reference
	opts Options
	log  *slog.Logger
}

// New returns the source for ref (registry/repository:tag, without oci://).
func New(ref string, opts Options) (*Source, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if r.Tag == "" || r.Digest != "" {
		return nil, fmt.Errorf("%s: name a tag to follow (registry/repository:tag)", ref)
	}
	if opts.Client == nil || opts.Policy == nil {
		return nil, errors.New("ocilock: a registry client and the node's trust policy are required")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MaxBackoff < opts.Interval {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.Interval)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{ref: r, opts: opts, log: log}, nil
}

// Name is "oci://REF", the owner of the chains it asks for.
func (s *Source) Name() string { return "oci://" + s.ref.String() }

// Kind is "oci" (agent.Kinder): the source label of kfm_reconcile_*.
func (s *Source) Kind() string { return "oci" }

// Run polls the tag until ctx ends. It never fails on registry or
// signature errors: those are logged, counted, and tried again.
func (s *Source) Run(ctx context.Context, update func(agent.Desired)) error {
	var (
		seen       digest.Digest // the last manifest accepted
		refused    digest.Digest // the last manifest refused (said once)
		last       []byte        // the last lock delivered
		generation int64
		wait       = s.opts.Interval
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		d, lk, err := s.check(ctx, seen)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errRefused):
			// Checked again at the next poll (a signature may come
			// later), but said only once.
			if d != refused {
				refused = d
				s.log.Error("lock refused; the running chains stay", "source", s.Name(), "digest", d.String(), "reason", reasonOf(err), "error", err)
				s.opts.Metrics.Refused(reasonOf(err))
			}
			wait = s.opts.Interval
		case err != nil:
			s.log.Warn("check lock", "source", s.Name(), "error", err, "retry_in", wait)
			wait = min(2*wait, s.opts.MaxBackoff)
		default:
			wait = s.opts.Interval
			if d == seen {
				break
			}
			seen = d
			text, _ := lk.Marshal()
			if bytes.Equal(text, last) {
				break
			}
			last = text
			generation++
			s.log.Info("desired state", "source", s.Name(), "digest", d.String(), "generation", generation, "chains", len(lk.Chains))
			update(agent.FromLock(s.Name(), generation, lk))
		}
		timer.Reset(wait)
	}
}

var errRefused = errors.New("lock refused")

// refusal is a lock the source will not deliver: reason is "signature" or
// "invalid".
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string   { return r.err.Error() }
func (r *refusal) Unwrap() []error { return []error{errRefused, r.err} }
func reasonOf(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason
	}
	return ""
}

// check resolves the tag and, when it names a manifest other than seen,
// verifies and reads the lock there.
func (s *Source) check(ctx context.Context, seen digest.Digest) (digest.Digest, *chain.Lock, error) {
	desc, err := s.opts.Client.ResolveLock(ctx, s.ref)
	if err != nil {
		return "", nil, err
	}
	if desc.Digest == seen {
		return seen, nil, nil
	}
	refuse := func(reason string, err error) (digest.Digest, *chain.Lock, error) {
		return desc.Digest, nil, &refusal{reason: reason, err: err}
	}
	repo, err := s.opts.Client.Repository(ctx, s.ref)
	if err != nil {
		return "", nil, err
	}
	pinned := s.ref.Repo() + "@" + desc.Digest.String()
	if _, err := verify.Verify(ctx, repo, pinned, desc, s.opts.Policy, &verify.VerifyOptions{}); err != nil {
		if errors.Is(err, registry.ErrUnreachable) || errors.Is(err, registry.ErrUnavailable) || ctx.Err() != nil {
			return "", nil, err
		}
		return refuse("signature", err)
	}
	data, err := s.opts.Client.FetchLock(ctx, s.ref, desc)
	if err != nil {
		if errors.Is(err, registry.ErrInvalidBundle) || errors.Is(err, registry.ErrTooLarge) {
			return refuse("invalid", err)
		}
		return "", nil, err
	}
	lk, err := chain.ParseLock(pinned, bytes.NewReader(data))
	if err != nil {
		return refuse("invalid", err)
	}
	for _, c := range lk.Chains {
		for _, p := range c.Programs {
			if p.Digest == "" {
				return refuse("invalid", fmt.Errorf("%s: %s %s program %q is a local file (%s): a lock for a fleet pins registry programs by digest", pinned, c.Interface, c.Hook, p.Name, p.Path))
			}
		}
	}
	return desc.Digest, lk, nil
}
