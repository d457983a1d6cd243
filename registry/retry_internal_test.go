package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		" 12 ":                          12 * time.Second,
		"0":                             0,
		"-3":                            0,
		"soon":                          0,
		"Sat, 05 Dec 2026 12:00:30 GMT": 30 * time.Second,
		"Sat, 05 Dec 2026 11:00:00 GMT": 0, // in the past
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

// Waits double from Backoff up to MaxBackoff, within ±10%.
func TestBackoff(t *testing.T) {
	p := RetryPolicy{Backoff: 250 * time.Millisecond, MaxBackoff: 4 * time.Second}
	for n, want := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		for range 20 {
			got := p.backoff(n + 1)
			if got < want*9/10 || got > want*11/10 {
				t.Fatalf("wait after try %d: %s, want %s ±10%%", n+1, got, want)
			}
		}
	}
}

// What is worth another try and what is not.
func TestRetryable(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:5000/v2/", nil)
	for _, tc := range []struct {
		status int
		err    error
		want   bool
	}{
		{status: 200}, {status: 404}, {status: 401}, {status: 501},
		{status: 500, want: true}, {status: 502, want: true}, {status: 503, want: true}, {status: 429, want: true}, {status: 408, want: true},
		{err: syscall.ECONNREFUSED, want: true},
		{err: fmt.Errorf("read: %w", syscall.ECONNRESET), want: true},
		{err: io.ErrUnexpectedEOF, want: true},
		{err: context.Canceled},
		{err: errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority")},
	} {
		var resp *http.Response
		if tc.err == nil {
			resp = &http.Response{StatusCode: tc.status, Header: http.Header{}, Body: http.NoBody}
		}
		if _, got := judge(req, resp, tc.err); got != tc.want {
			t.Errorf("status %d, error %v: retry %v, want %v", tc.status, tc.err, got, tc.want)
		}
	}
}
