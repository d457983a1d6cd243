package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

// RetryPolicy bounds how a Client retries registry requests. A try fails
// when the connection cannot be made or breaks, when the registry answers
// 408, 429 or a 5xx other than 501 and 505, or (for a blob or manifest being
// pulled) when the body breaks off, stalls, or arrives with a wrong length.
// TLS errors, 4xx answers and bytes that do not match their digest are not
// retried: trying again would not change them.
//
// The tries of one request share one budget: a blob whose body breaks off
// after half of it is resumed with an HTTP Range request, and that request,
// its waits and its own failures count against the same Attempts and
// Timeout. A try that brought bytes of the blob before it failed starts
// the count of tries (and the backoff) again: a slow, flaky link that keeps
// delivering finishes the blob within Timeout, while a registry that fails
// at the same place every time is given up after Attempts tries. Zero
// fields take DefaultRetryPolicy's.
type RetryPolicy struct {
	// Attempts is how many times one request (a manifest, a blob, a tag
	// lookup) is tried in a row without progress before kfm gives up
	// (default 5).
	Attempts int
	// Timeout bounds each registry operation of a Client, every try and
	// wait included: resolving a reference, fetching a bundle, fetching
	// its signatures (default 2 minutes). No retry starts when its wait
	// would end after the bound; a transfer still running at the bound is
	// cancelled.
	Timeout time.Duration
	// Backoff is the wait after the first failed try; it doubles after
	// each further failure, up to MaxBackoff, with ±10% jitter (defaults
	// 250ms and 4s).
	Backoff, MaxBackoff time.Duration
	// MaxRetryAfter caps the wait a registry may ask for with Retry-After
	// on a 429 or 503 (default 30s): kfm waits what the registry asks, up
	// to this, and never less than its own backoff.
	MaxRetryAfter time.Duration
	// StallTimeout abandons a try that receives nothing (no response, no
	// body byte) for this long (default 30s); the transfer resumes where
	// it stopped.
	StallTimeout time.Duration
	// Clock measures elapsed time and waits between tries; nil is the real
	// clock. Tests pass a fake one, so that backoff and Retry-After are
	// asserted without waiting for them.
	Clock Clock
}

// Clock is the time source of a RetryPolicy.
type Clock interface {
	Now() time.Time
	// Sleep waits for d, or until ctx ends (then it returns ctx.Err()).
	Sleep(ctx context.Context, d time.Duration) error
}

// DefaultRetryPolicy is the policy of a Client whose Options.Retry is zero:
// at most 5 tries per request, waits of 250ms, 500ms, 1s, 2s between them
// (about 4s in all), and at most 2 minutes per operation.
var DefaultRetryPolicy = RetryPolicy{
	Attempts:      5,
	Timeout:       2 * time.Minute,
	Backoff:       250 * time.Millisecond,
	MaxBackoff:    4 * time.Second,
	MaxRetryAfter: 30 * time.Second,
	StallTimeout:  30 * time.Second,
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy
	if p.Attempts <= 0 {
		p.Attempts = d.Attempts
	}
	if p.Timeout <= 0 {
		p.Timeout = d.Timeout
	}
	if p.Backoff <= 0 {
		p.Backoff = d.Backoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = max(d.MaxBackoff, p.Backoff)
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = d.MaxRetryAfter
	}
	if p.StallTimeout <= 0 {
		p.StallTimeout = d.StallTimeout
	}
	if p.Clock == nil {
		p.Clock = realClock{}
	}
	return p
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RetryError is how a request ends that failed on every try kfm allowed it.
// It wraps ErrUnavailable, ErrUnreachable too when the last failure was a
// connection that could not be made or broke, and the last failure itself.
type RetryError struct {
	// Host is the registry (or the storage host it redirected to) that
	// failed.
	Host string
	// RedirectedFrom is the registry that redirected to Host, if any.
	RedirectedFrom string
	// Tries were made, over Elapsed.
	Tries   int
	Elapsed time.Duration
	// Status is the HTTP status of the last try (0: no answer).
	Status int
	// Bound says why kfm stopped: "tries" (Attempts reached) or "time"
	// (the next wait would have passed Timeout).
	Bound string
	// Err is the last failure.
	Err error
}

func (e *RetryError) Error() string {
	who := "registry " + e.Host
	if e.RedirectedFrom != "" {
		who = fmt.Sprintf("storage host %s (where registry %s redirected)", e.Host, e.RedirectedFrom)
	}
	what := "kept failing"
	if e.Status == 0 && isDialError(e.Err) {
		what = "stayed unreachable"
	}
	if e.Status != 0 {
		what += fmt.Sprintf(" with HTTP %d", e.Status)
	}
	var stop string
	if e.Bound == "time" {
		stop = "; the next try would have passed the time bound (--registry-timeout)"
	}
	return fmt.Sprintf("%s %s after %d %s over %s%s: %v; check that the registry is up or try again later (--registry-attempts and --registry-timeout allow more)",
		who, what, e.Tries, plural(e.Tries, "try", "tries"), e.Elapsed.Round(time.Millisecond), stop, e.Err)
}

func (e *RetryError) Unwrap() []error {
	errs := []error{ErrUnavailable, e.Err}
	if e.Status == 0 && isNetworkError(e.Err) {
		errs = append(errs, ErrUnreachable)
	}
	return errs
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// budget counts the failed tries of one request (a blob with its resumes,
// or one HTTP request) against a RetryPolicy.
type budget struct {
	p     RetryPolicy
	start time.Time

	mu    sync.Mutex
	tries int
	waits []time.Duration
}

func newBudget(p RetryPolicy) *budget {
	return &budget{p: p, start: p.Clock.Now()}
}

type budgetKey struct{}

func withBudget(ctx context.Context, b *budget) context.Context {
	return context.WithValue(ctx, budgetKey{}, b)
}

func budgetFrom(ctx context.Context) *budget {
	b, _ := ctx.Value(budgetKey{}).(*budget)
	return b
}

// failure is one failed try.
type failure struct {
	host, redirectedFrom string
	status               int
	retryAfter           time.Duration
	err                  error
}

// fail records a failed try. It waits before the next try and returns nil,
// or returns a *RetryError when the policy allows no further try (or ctx's
// error when ctx ended during the wait).
func (b *budget) fail(ctx context.Context, f failure) error {
	b.mu.Lock()
	b.tries++
	tries := b.tries
	b.mu.Unlock()
	elapsed := b.p.Clock.Now().Sub(b.start)
	giveUp := func(bound string) error {
		return &RetryError{Host: f.host, RedirectedFrom: f.redirectedFrom, Tries: tries, Elapsed: elapsed, Status: f.status, Bound: bound, Err: f.err}
	}
	if tries >= b.p.Attempts {
		return giveUp("tries")
	}
	wait := b.p.backoff(tries)
	if f.retryAfter > 0 {
		wait = max(wait, min(f.retryAfter, b.p.MaxRetryAfter))
	}
	if elapsed+wait > b.p.Timeout {
		return giveUp("time")
	}
	b.mu.Lock()
	b.waits = append(b.waits, wait)
	b.mu.Unlock()
	return b.p.Clock.Sleep(ctx, wait)
}

// progress records that a failed try brought part of the blob: the
// tries since are counted anew (Timeout still bounds them all).
func (b *budget) progress() {
	b.mu.Lock()
	b.tries = 0
	b.mu.Unlock()
}

// backoff is the wait after the n-th failed try (n >= 1).
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.Backoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	// ±10% jitter, so that many hosts retrying at once spread out.
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// retryTransport retries HTTP requests under a RetryPolicy. Requests whose
// context carries a budget (blob fetches) spend it; others get their own.
type retryTransport struct {
	base   http.RoundTripper
	policy RetryPolicy
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	b := budgetFrom(ctx)
	if b == nil {
		b = newBudget(t.policy)
	}
	for {
		resp, err := t.base.RoundTrip(req)
		f, retry := judge(req, resp, err)
		if !retry || ctx.Err() != nil {
			return resp, err
		}
		if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
			return resp, err // the body cannot be sent again
		}
		if resp != nil {
			resp.Body.Close()
		}
		if werr := b.fail(ctx, f); werr != nil {
			return nil, werr
		}
		next := req.Clone(ctx)
		if req.GetBody != nil {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, gerr
			}
			next.Body = body
		}
		req = next
	}
}

// judge tells whether a try failed in a way worth another try, and
// describes the failure. For a retryable answer it reads (a little of) the
// body for the registry's own message.
func judge(req *http.Request, resp *http.Response, err error) (failure, bool) {
	f := failure{host: req.URL.Host}
	if req.Response != nil && req.Response.Request != nil && req.Response.Request.URL.Host != req.URL.Host {
		f.redirectedFrom = originalHost(req)
	}
	if err != nil {
		f.err = err
		return f, retryableError(err)
	}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented && resp.StatusCode != http.StatusHTTPVersionNotSupported:
	default:
		return f, false
	}
	f.status = resp.StatusCode
	f.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.Join(strings.Fields(string(msg)), " ")
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	if json.Unmarshal(msg, &body) == nil && len(body.Errors) > 0 {
		text = body.Errors.Error()
	} else if len(text) > 200 {
		text = text[:200] + "..."
	}
	if text == "" {
		text = http.StatusText(resp.StatusCode)
	}
	f.err = fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, text)
	return f, true
}

// originalHost is the host of the first request of a redirect chain.
func originalHost(req *http.Request) string {
	for req.Response != nil && req.Response.Request != nil {
		req = req.Response.Request
	}
	return req.URL.Host
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, 1<<30)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// retryableError: connections refused, reset or cut short, timeouts and
// temporary DNS failures are; TLS and certificate errors, unknown hosts,
// canceled requests are not.
func retryableError(err error) bool {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case isTLSError(err):
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.IsTimeout || dnsErr.IsTemporary
	}
	return isNetworkError(err)
}

func isNetworkError(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	var netErr net.Error
	var opErr *net.OpError
	return errors.As(err, &opErr) || (errors.As(err, &netErr) && netErr.Timeout())
}

// isDialError reports whether err says that no connection could be made
// at all (refused, no route, no such host), as opposed to one that broke.
func isDialError(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr) || (errors.As(err, &opErr) && opErr.Op == "dial")
}

func isTLSError(err error) bool {
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	return errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) ||
		errors.As(err, &invalid) || errors.As(err, &rh) || errors.As(err, &alert) ||
		errors.Is(err, http.ErrSchemeMismatch) || strings.Contains(err.Error(), "tls: ")
}

// bound runs fn under the policy's Timeout and turns the end of that time
// into an error that says which bound it was.
func (c *Client) bound(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	cause := fmt.Errorf("%s: %w: gave up after %s, the bound on one registry operation (--registry-timeout)", what, ErrUnavailable, c.retry.Timeout)
	ctx, cancel := context.WithTimeoutCause(ctx, c.retry.Timeout, cause)
	defer cancel()
	err := fn(ctx)
	if err != nil && errors.Is(context.Cause(ctx), cause) {
		return cause
	}
	return err
}
