package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/kfm-project/kfm/registry/bpfman"
	"github.com/kfm-project/kfm/registry/cache"
)

// Errors callers branch on (the kfm command maps them to messages and exit
// codes). Every error of this package that is about one of these conditions
// wraps the matching sentinel.
var (
	// ErrInvalidReference: the reference is not registry/repository[:tag][@digest].
	ErrInvalidReference = errors.New("invalid reference")
	// ErrNotFound: the registry has no such repository, tag or digest.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials (or wants
	// some). The message suggests `kfm login`.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotBundle: the artifact is neither a kfm bundle nor a bpfman
	// bytecode image. The message says what it is instead.
	ErrNotBundle = errors.New("not a kfm bundle")
	// ErrInvalidBundle: a bundle's config, bundle.yaml or object is
	// malformed or does not validate.
	ErrInvalidBundle = errors.New("invalid bundle")
	// ErrDigestMismatch: the registry (or the disk) served bytes that do
	// not match the digest they were asked for.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrTooLarge: a manifest, config or layer exceeds kfm's size limits.
	ErrTooLarge = errors.New("too large")
	// ErrNotCached: offline, and the cache does not hold the reference.
	ErrNotCached = errors.New("not in the cache")
	// ErrUnreachable: the registry could not be reached (connection, DNS,
	// TLS).
	ErrUnreachable = errors.New("registry unreachable")
	// ErrUnavailable: the registry kept failing (5xx, 429, broken
	// transfers) on every try the RetryPolicy allowed, or an operation
	// ran out of its time bound. The error is a *RetryError in the first
	// case.
	ErrUnavailable = errors.New("registry unavailable")
)

// classify wraps err from oras-go with the sentinel it stands for and adds
// what the user can do about it. what names the thing that was asked for,
// host the registry (for the login hint).
func classify(err error, what, host string) error {
	if err == nil {
		return nil
	}
	for _, s := range []error{ErrInvalidReference, ErrNotFound, ErrUnauthorized, ErrNotBundle, ErrInvalidBundle, ErrDigestMismatch, ErrTooLarge, ErrNotCached, ErrUnreachable, ErrUnavailable} {
		if errors.Is(err, s) {
			var re *RetryError
			if errors.As(err, &re) {
				// Without the url.Error around it: the message
				// names the registry already.
				return fmt.Errorf("%s: %w", what, re)
			}
			return err
		}
	}
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%s: %w: the registry refused access (HTTP %d); %s", what, ErrUnauthorized, resp.StatusCode, loginHint(host))
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w", what, ErrNotFound)
		case http.StatusRequestEntityTooLarge:
			return fmt.Errorf("%s: %w: %w", what, ErrTooLarge, err)
		}
	}
	switch {
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fmt.Errorf("%s: %w: the registry wants credentials and none are stored for %s; %s", what, ErrUnauthorized, host, loginHint(host))
	case errors.Is(err, errdef.ErrNotFound), errors.Is(err, cache.ErrNotFound):
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case errors.Is(err, content.ErrMismatchedDigest), errors.Is(err, content.ErrTrailingData),
		errors.Is(err, content.ErrInvalidDescriptorSize), errors.Is(err, cache.ErrCorrupt):
		return fmt.Errorf("%s: %w: the bytes received do not match their digest: %w", what, ErrDigestMismatch, err)
	case errors.Is(err, errdef.ErrSizeExceedsLimit), errors.Is(err, cache.ErrTooLarge):
		return fmt.Errorf("%s: %w: %w", what, ErrTooLarge, err)
	case errors.Is(err, bpfman.ErrUnsafeLayer), errors.Is(err, bpfman.ErrInvalidLabels):
		return fmt.Errorf("%s: %w: %w", what, ErrInvalidBundle, err)
	case errors.Is(err, errdef.ErrInvalidReference):
		return fmt.Errorf("%s: %w: %w", what, ErrInvalidReference, err)
	}
	if msg := tlsAdvice(err, host); msg != "" {
		return fmt.Errorf("%s: %w: %s (TLS errors are not retried): %w", what, ErrUnreachable, msg, err)
	}
	var netErr net.Error
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.As(err, &netErr) || errors.Is(err, http.ErrSchemeMismatch) {
		return fmt.Errorf("%s: %w: %w", what, ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// tlsAdvice says what is wrong with a registry's certificate and what to
// do about it ("" for errors that are not about certificates).
func tlsAdvice(err error, host string) string {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("registry %s presented a TLS certificate signed by an authority kfm does not trust; pass --ca-file with the PEM certificate of the CA that signed it (or add that CA to the system's trust store)", host)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("registry %s presented a TLS certificate that is not valid for that name; use the host name the certificate was issued for", host)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Sprintf("registry %s presented a TLS certificate that has expired or is not yet valid; the registry must renew it (or this host's clock is wrong)", host)
	case errors.As(err, &invalid):
		return fmt.Sprintf("registry %s presented an invalid TLS certificate", host)
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return fmt.Sprintf("registry %s presented a TLS certificate kfm cannot verify; pass --ca-file with the CA that signed it", host)
	}
	return ""
}

func loginHint(host string) string {
	return fmt.Sprintf("log in with `kfm login %s -u USER --password-stdin` (docker, oras and helm logins work too) and check that the user may access the repository", host)
}
