package faultproxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Fault is what the proxy does to a request a Rule matched. The
// constructors below make the ones there are.
type Fault interface {
	apply(p *Proxy, w http.ResponseWriter, req *http.Request)
	// String names the fault in Request.Fault.
	String() string
}

type faultFunc struct {
	name string
	fn   func(p *Proxy, w http.ResponseWriter, req *http.Request)
}

func (f faultFunc) apply(p *Proxy, w http.ResponseWriter, req *http.Request) { f.fn(p, w, req) }
func (f faultFunc) String() string                                           { return f.name }

// Status answers with code and a Distribution-style error body; the
// registry is not asked.
func Status(code int) Fault {
	return faultFunc{fmt.Sprintf("status %d", code), func(_ *Proxy, w http.ResponseWriter, _ *http.Request) {
		writeError(w, code, "")
	}}
}

// TooManyRequests answers 429 with the Retry-After header retryAfter
// (seconds or an HTTP date; "" for none).
func TooManyRequests(retryAfter string) Fault {
	return faultFunc{"429 retry-after " + retryAfter, func(_ *Proxy, w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusTooManyRequests, retryAfter)
	}}
}

func writeError(w http.ResponseWriter, code int, retryAfter string) {
	w.Header().Set("Content-Type", "application/json")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(code)
	name := strings.ToUpper(strings.ReplaceAll(http.StatusText(code), " ", "_"))
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"injected by faultproxy"}]}`, name)
}

// Reset forwards the request, sends the answer's headers and its first
// after body bytes, and resets the connection (TCP RST).
func Reset(after int64) Fault {
	return rawFault(fmt.Sprintf("reset after %d", after), func(c net.Conn, body io.Reader, resp *http.Response) {
		_, _ = io.CopyN(c, body, after)
		// Give the client a moment to read what was sent: a reset
		// makes the kernel drop data not yet read.
		time.Sleep(20 * time.Millisecond)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}, keepLength)
}

// Truncate forwards the request, announces the whole body (the true
// Content-Length) but sends only its first after bytes, then closes the
// connection cleanly.
func Truncate(after int64) Fault {
	return rawFault(fmt.Sprintf("truncate after %d", after), func(c net.Conn, body io.Reader, _ *http.Response) {
		_, _ = io.CopyN(c, body, after)
	}, keepLength)
}

// ContentLength forwards the request and sends the whole body, but with
// a Content-Length delta bytes off (a client believing it reads too few
// or waits for bytes that never come).
func ContentLength(delta int64) Fault {
	return rawFault(fmt.Sprintf("content-length %+d", delta), func(c net.Conn, body io.Reader, _ *http.Response) {
		_, _ = io.Copy(c, body)
	}, func(n int64) int64 { return n + delta })
}

// Trickle forwards the request and sends the body chunk bytes at a time,
// one chunk every interval.
func Trickle(chunk int64, every time.Duration) Fault {
	return rawFault(fmt.Sprintf("trickle %d/%s", chunk, every), func(c net.Conn, body io.Reader, _ *http.Response) {
		for {
			n, err := io.CopyN(c, body, chunk)
			if n == 0 || err != nil {
				return
			}
			time.Sleep(every)
		}
	}, keepLength)
}

// Stall forwards the request, sends the headers and the first after body
// bytes, and then nothing until the client hangs up (or a minute passes).
func Stall(after int64) Fault {
	return rawFault(fmt.Sprintf("stall after %d", after), func(c net.Conn, body io.Reader, _ *http.Response) {
		_, _ = io.CopyN(c, body, after)
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		_, _ = io.Copy(io.Discard, c) // returns when the client closes
	}, keepLength)
}

// LoseResponse forwards the request, so the registry does what it asks, and
// closes the connection without answering: the client cannot tell whether
// an upload or a tag took effect.
func LoseResponse() Fault {
	return faultFunc{"lose the response", func(p *Proxy, w http.ResponseWriter, req *http.Request) {
		if resp, err := p.forward(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		conn, _, err := hijack(w)
		if err != nil {
			return
		}
		conn.Close()
	}}
}

// Redirect answers 307 Temporary Redirect to base (scheme://host) with the
// request's path and query, as Distribution does when blobs live in
// object storage.
func Redirect(base string) Fault {
	return faultFunc{"redirect to " + base, func(_ *Proxy, w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Location", base+req.URL.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
	}}
}

func keepLength(n int64) int64 { return n }

// rawFault forwards the request and writes the answer on the raw
// connection: headers with Content-Length length(true length), then body
// writes what it wants of the body. The connection is closed afterwards.
func rawFault(name string, body func(c net.Conn, body io.Reader, resp *http.Response), length func(int64) int64) Fault {
	return faultFunc{name, func(p *Proxy, w http.ResponseWriter, req *http.Request) {
		resp, err := p.forward(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		conn, bw, err := hijack(w)
		if err != nil {
			return
		}
		defer conn.Close()
		cl := resp.ContentLength
		if cl >= 0 {
			cl = length(cl)
		}
		if writeHead(bw.Writer, resp, cl) != nil {
			return
		}
		body(conn, resp.Body, resp)
	}}
}
