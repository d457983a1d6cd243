// Package testregistry runs a real OCI registry for tests: CNCF Distribution
// v3 in-process, on 127.0.0.1 with a random port, its filesystem storage in
// the test's temporary directory (so that tests can tamper with blobs on
// disk). Variants: plain HTTP, HTTPS with a CA generated for the test, basic
// auth (an htpasswd file with a bcrypt hash generated for the test), and
// token auth (a small token server in the test process issues JWTs the
// registry verifies, the Docker token protocol).
//
// Distribution logs through the process-wide logrus logger; this package
// discards its output unless KFM_REGISTRY_LOG=1.
//
// Typical use:
//
//	r := testregistry.Start(t, testregistry.Options{Auth: testregistry.AuthBasic, TLS: true})
//	ref := r.Ref("kfm/xdp-count", "1.0.0")   // 127.0.0.1:PORT/kfm/xdp-count:1.0.0
//	// ... push and pull with r.Username(), r.Password(), r.CAFile() ...
//	os.WriteFile(r.BlobPath(layerDigest), tampered, 0o644) // the registry now serves other bytes
//	r.Stop()                                              // offline from here on
package testregistry
