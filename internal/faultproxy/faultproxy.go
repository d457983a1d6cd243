package faultproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

// TB is the part of testing.TB the proxy uses.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Options configure Start.
type Options struct {
	// Cert, when not CertNone, serves HTTPS with a certificate of that
	// kind (see CAFile).
	Cert Cert
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	upstream string // host:port of the registry, plain HTTP
	host     string
	tls      bool
	caFile   string
	srv      *http.Server
	client   *http.Client
	done     chan struct{}

	handshakes atomic.Int64

	mu    sync.Mutex
	rules []*Rule
	log   []Request
}

// Request is a request the proxy saw.
type Request struct {
	Method, Path string
	// Range is the request's Range header ("" without).
	Range string
	// Fault is the fault it got ("" when it passed through).
	Fault string
}

// Rule selects requests and the fault they get.
type Rule struct {
	// Method matches the request method; "" matches any.
	Method string
	// Path is a regular expression the URL path must match; "" matches
	// any.
	Path string
	// Skip lets the first Skip matching requests through unharmed.
	Skip int
	// Times is how many matching requests after those get the fault; 0
	// means every one.
	Times int
	Fault Fault

	re   *regexp.Regexp
	seen int
}

// Blobs matches every blob path; Manifests every manifest path.
const (
	Blobs     = `^/v2/.+/blobs/[a-z0-9]+:[a-f0-9]+$`
	Manifests = `^/v2/.+/manifests/[^/]+$`
)

// Blob matches the blob d in any repository.
func Blob(d digest.Digest) string { return `^/v2/.+/blobs/` + regexp.QuoteMeta(d.String()) + `$` }

// Manifest matches the manifest (tag or digest) ref in any repository.
func Manifest(ref string) string {
	return `^/v2/.+/manifests/` + regexp.QuoteMeta(ref) + `$`
}

// Start runs a proxy in front of the plain-HTTP registry at upstream
// (host:port) until the test ends.
func Start(tb TB, upstream string, opts Options) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{
		upstream: upstream,
		host:     ln.Addr().String(),
		done:     make(chan struct{}),
		client: &http.Client{
			Transport:     &http.Transport{DisableCompression: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	if opts.Cert != CertNone {
		cfg, caFile, err := serverTLS(tb.TempDir(), opts.Cert)
		if err != nil {
			ln.Close()
			tb.Fatalf("faultproxy: certificates: %v", err)
		}
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			p.handshakes.Add(1)
			return nil, nil
		}
		p.tls, p.caFile = true, caFile
		ln = tls.NewListener(ln, cfg)
	}
	go func() { _ = p.srv.Serve(ln) }()
	tb.Cleanup(p.Stop)
	return p
}

// Host is the proxy's host:port, for references.
func (p *Proxy) Host() string { return p.host }

// URL is the proxy's base URL.
func (p *Proxy) URL() string {
	if p.tls {
		return "https://" + p.host
	}
	return "http://" + p.host
}

// CAFile is the PEM file of the CA a client should trust for the proxy's
// TLS certificate ("" without TLS). It does not sign a CertUntrusted
// certificate.
func (p *Proxy) CAFile() string { return p.caFile }

// Handshakes counts the TLS handshakes clients started.
func (p *Proxy) Handshakes() int { return int(p.handshakes.Load()) }

// Add adds a rule; the first rule that matches a request decides.
func (p *Proxy) Add(r Rule) {
	if r.Path != "" {
		r.re = regexp.MustCompile(r.Path)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &r)
}

// Clear removes every rule and forgets the requests seen.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules, p.log = nil, nil
}

// Requests are the requests seen so far, in order.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.log...)
}

// Count counts the requests seen with method whose path matches the
// regular expression path.
func (p *Proxy) Count(method, path string) int {
	re := regexp.MustCompile(path)
	n := 0
	for _, r := range p.Requests() {
		if (method == "" || r.Method == method) && re.MatchString(r.Path) {
			n++
		}
	}
	return n
}

// Stop shuts the proxy down (idempotent; also done when the test ends).
func (p *Proxy) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	_ = p.srv.Close()
	p.client.CloseIdleConnections()
}

// DeadHost returns a 127.0.0.1 address nothing listens on (a port that was
// just opened and closed).
func DeadHost(tb TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func (p *Proxy) match(req *http.Request) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	var fault Fault
	for _, r := range p.rules {
		if (r.Method != "" && r.Method != req.Method) || (r.re != nil && !r.re.MatchString(req.URL.Path)) {
			continue
		}
		r.seen++
		n := r.seen - r.Skip
		if n <= 0 || (r.Times > 0 && n > r.Times) {
			continue
		}
		fault = r.Fault
		break
	}
	entry := Request{Method: req.Method, Path: req.URL.Path, Range: req.Header.Get("Range")}
	if fault != nil {
		entry.Fault = fault.String()
	}
	p.log = append(p.log, entry)
	return fault
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if f := p.match(req); f != nil {
		f.apply(p, w, req)
		return
	}
	resp, err := p.forward(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// forward sends req to the registry and returns its answer (redirects not
// followed).
func (p *Proxy) forward(req *http.Request) (*http.Response, error) {
	out, err := http.NewRequestWithContext(req.Context(), req.Method, "http://"+p.upstream+req.URL.RequestURI(), req.Body)
	if err != nil {
		return nil, err
	}
	out.Header = req.Header.Clone()
	// As a reverse proxy in front of a registry does: the registry builds
	// the URLs it answers with (an upload's Location) for the host the
	// client asked.
	out.Header.Set("X-Forwarded-Host", req.Host)
	proto := "http"
	if p.tls {
		proto = "https"
	}
	out.Header.Set("X-Forwarded-Proto", proto)
	out.ContentLength = req.ContentLength
	return p.client.Do(out)
}

// hijack takes the connection over from net/http.
func hijack(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("faultproxy: connection cannot be taken over")
	}
	return hj.Hijack()
}

// writeHead writes the status line and headers of resp on a raw
// connection, with contentLength as Content-Length (-1: none) and
// "Connection: close".
func writeHead(bw *bufio.Writer, resp *http.Response, contentLength int64) error {
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	h := resp.Header.Clone()
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	h.Del("Connection")
	if contentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(contentLength, 10))
	}
	h.Set("Connection", "close")
	if err := h.Write(bw); err != nil {
		return err
	}
	_, err := bw.WriteString("\r\n")
	if err != nil {
		return err
	}
	return bw.Flush()
}
