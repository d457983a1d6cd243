// Package faultproxy is an HTTP proxy on 127.0.0.1 that injects registry
// and network faults between kfm and a real registry (internal/testregistry,
// CNCF Distribution): connections reset in the middle of a body, bodies cut
// short, 5xx answers, 429 with Retry-After, bodies that trickle or stall, a
// wrong Content-Length, redirects to another host, and TLS listeners with
// certificates a client must refuse.
//
// Requests pass through to the registry unchanged unless a Rule matches
// them. A rule matches by method and path (a regular expression; see Blobs
// and Manifests) and applies its Fault to a window of the matching requests
// (skip the first Skip, then fault the next Times, or all of them), so a
// test can say "the second GET of this blob is reset after 4 KiB". The
// proxy logs every request it saw, with its Range header and the fault it
// got, for assertions on retries and resumes.
//
//	reg := testregistry.Start(t, testregistry.Options{})
//	p := faultproxy.Start(t, reg.Host(), faultproxy.Options{})
//	p.Add(faultproxy.Rule{Path: faultproxy.Blob(layer), Times: 1, Fault: faultproxy.Truncate(4096)})
//	// pull p.Host()+"/repo:tag"; then p.Requests() shows a GET with
//	// "Range: bytes=4096-..."
//
// Faults are written on the raw connection (the proxy takes the connection
// over from net/http), so they can break HTTP in ways a well-behaved
// server never does.
package faultproxy
