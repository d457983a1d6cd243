package faultproxy_test

import (
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kfm-project/kfm/internal/faultproxy"
)

// upstream is a plain HTTP server that answers every path with body.
func upstream(t *testing.T, body string) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "blob", time.Time{}, strings.NewReader(body))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// A rule faults the window of matching requests it names, and only those;
// the log shows every request with its Range and fault.
func TestRuleWindow(t *testing.T) {
	body := strings.Repeat("0123456789", 100)
	p := faultproxy.Start(t, upstream(t, body), faultproxy.Options{})
	p.Add(faultproxy.Rule{Method: "GET", Path: `^/v2/x/blobs/`, Skip: 1, Times: 2, Fault: faultproxy.Status(503)})
	var codes []int
	for range 4 {
		resp, err := http.Get(p.URL() + "/v2/x/blobs/sha256:00")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 200 && string(data) != body {
			t.Errorf("passed-through body differs: %d bytes", len(data))
		}
	}
	if got := []int{200, 503, 503, 200}; !slices.Equal(codes, got) {
		t.Errorf("statuses %v, want %v", codes, got)
	}
	if n := p.Count("GET", `^/v2/x/blobs/`); n != 4 {
		t.Errorf("Count = %d, want 4", n)
	}
	if reqs := p.Requests(); reqs[1].Fault != "status 503" || reqs[0].Fault != "" {
		t.Errorf("log %+v", reqs)
	}
}

// Truncate announces the whole body and sends part of it: the client sees
// an unexpected EOF after exactly that many bytes.
func TestTruncate(t *testing.T) {
	body := strings.Repeat("x", 5000)
	p := faultproxy.Start(t, upstream(t, body), faultproxy.Options{})
	p.Add(faultproxy.Rule{Fault: faultproxy.Truncate(1234)})
	resp, err := http.Get(p.URL() + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if resp.ContentLength != 5000 || len(data) != 1234 || err != io.ErrUnexpectedEOF {
		t.Errorf("Content-Length %d, read %d bytes, error %v; want 5000, 1234, unexpected EOF", resp.ContentLength, len(data), err)
	}
}
