// Package registry is kfm's marketplace side: the bundle format, and
// publishing and pulling bundles through OCI registries with oras-go.
//
// # Bundle format
//
// A bundle is one OCI image-spec 1.1 artifact: a manifest with artifactType
// application/vnd.kfm.bundle.v1, a config blob of media type
// application/vnd.kfm.bundle.config.v1+json (Config: name, version,
// description, licence, source, and per entry function its hooks, default
// priority and proceed-on verdicts, params and maps), and one layer of media
// type application/vnd.kfm.bpf.object.v1+elf holding the ELF object, then
// optionally one text/markdown layer titled README.md (ReadmeMediaType, at
// most MaxReadmeSize). The publisher's metadata (keywords, categories from
// the Categories vocabulary, authors, homepage, SPDX licence, readme) is for
// display and search only. FetchMetadata reads manifest and config (and the
// readme) without the object, for search and catalogs (package catalog). Pack
// derives the config from the object (program types, volatile const params,
// maps, licence, libxdp's XDP_RUN_CONFIG) and bundle.yaml (BundleFile),
// validates it, and writes stable JSON, with the creation time taken from
// SOURCE_DATE_EPOCH (default the epoch), so that the same inputs always give
// the same manifest digest. bpfman bytecode images (see package bpfman) are
// read as bundles too.
//
// # Pulling: resolve once, then digests only
//
// A Client pulls in three steps, which install and signature verification
// call one by one:
//
//	pinned, desc, err := c.Resolve(ctx, ref, opts) // tag -> digest, once
//	err = c.Fetch(ctx, pinned, desc, opts)         // by digest into the cache
//	// verify the signatures of pinned.Digest here (package verify)
//	b, err := c.Open(ctx, pinned)                  // from the cache, by digest
//
// Pull does all three without the verification step. Every blob is checked
// against its digest while it arrives, manifests, configs and objects are
// size-capped (Limits), and nothing reaches the cache before the whole
// bundle arrived and validated. Open verifies the cached bytes again. With
// PullOptions.Offline a tag resolves to the digest it was last pulled at; a
// pinned reference whose bundle is cached needs no network at all.
//
// Signatures go into the same cache (package cache): FetchReferrers copies
// the OCI referrers of a digest and its legacy cosign sha256-<hex>.sig tag,
// and Repository hands out the configured oras-go repository for anything
// else a signer needs.
//
// # Registries and credentials
//
// Credentials come from the Docker credential store (DockerCredentials:
// $DOCKER_CONFIG or ~/.docker/config.json with its credential helpers), which
// Login and Logout write, so logins of docker, oras and helm work for kfm
// and the other way round. HTTPS is the default; a loopback registry that
// does not speak TLS is reached over plain HTTP, any other only with
// Options.PlainHTTP. Options.CAFile adds a CA to trust. A loopback registry
// may use a token server on another loopback host (oras-go refuses such
// realms by default, to keep remote registries from pointing credentials at
// local services; kfm lifts that only for loopback registries).
//
// # Faults: retries, resumes, bounds
//
// A Client retries under its RetryPolicy (Options.Retry, default
// DefaultRetryPolicy): connections refused, reset or cut short, 408, 429
// and 5xx answers, and bodies that break off, stall or announce the wrong
// Content-Length are tried again, Attempts times at most, with doubling,
// jittered waits that honour Retry-After up to MaxRetryAfter; each
// operation (Resolve, Fetch, FetchReferrers) ends within Timeout. A blob
// that breaks off is resumed with an HTTP Range request from the byte where
// it stopped, through redirects to blob storage too; the pieces are checked
// against the digest as a whole, and a resumed blob that does not match is
// fetched once more from the start. TLS errors, 4xx answers and bytes that
// do not match their digest are not retried. A request that used up its
// tries ends with a *RetryError (ErrUnavailable) naming the registry (or
// the storage host it redirected to), the tries, the time and the last
// failure.
//
// # Errors
//
// Errors wrap a sentinel the kfm command branches on: ErrInvalidReference,
// ErrNotFound, ErrUnauthorized (with a hint to `kfm login`), ErrNotBundle
// (saying what the artifact is instead), ErrInvalidBundle, ErrDigestMismatch,
// ErrTooLarge, ErrNotCached, ErrUnreachable (TLS errors too, saying which
// and what to do) and ErrUnavailable.
package registry
