// Package cache is kfm's local content store: an OCI image layout directory
// (read and written with oras-go's content/oci) that holds every bundle kfm
// pulled, and the signatures that belong to them, so that installing a bundle
// that is already cached works without a network.
//
// Layout (default directory <cache-dir>/oci, see kfm --cache-dir):
//
//	<dir>/oci-layout        OCI image layout marker
//	<dir>/index.json        every cached manifest; tagged ones carry the full
//	                        reference they were pulled as in the annotation
//	                        org.opencontainers.image.ref.name
//	                        ("registry.example.com/net/ratelimit:1.2.0")
//	<dir>/blobs/sha256/...  manifests, configs and layers by digest
//	<dir>/.kfm-lock         lock and generation counter shared by every kfm
//	                        process using the directory
//
// Content is addressed by digest and verified twice: when it is written (Push
// refuses bytes that do not match the descriptor, and nothing of them stays
// behind) and when it is read (Fetch and FetchAll return an error instead of
// bytes that no longer match their digest, e.g. after the disk was tampered
// with).
//
// Signatures live next to the bundles they sign: a sigstore bundle referrer is
// a manifest whose subject is the bundle's manifest, stored like any other
// manifest and found again with Referrers; a legacy cosign signature is a
// manifest tagged "<registry>/<repository>:sha256-<hex>.sig". Both can be
// copied in with Push and Tag, or with oras.Copy into Target.
//
// Faults: a full or read-only file system fails a write with ErrNotWritable
// (wrapping the errno), naming the directory and what to do, and leaves the
// cache as it was: blobs are written to a temporary file in ingest/ and
// renamed into place (a failed write's temporary file is removed; one left
// by a killed process is removed by the next Open after an hour), and
// index.json is replaced so that the previous index stays whole when the
// new one does not fit. A read-only cache still serves what it holds, so
// that bundles already cached install offline. Directories are 0755 and
// files 0644 or less, whatever the umask.
//
// Several kfm processes may use one cache directory at the same time: every
// change of index.json happens under an exclusive flock of .kfm-lock, and
// readers reload the index when another process changed it.
package cache
