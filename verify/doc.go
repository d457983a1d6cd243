// Package verify signs kfm bundles and verifies their signatures, so that
// nothing unsigned reaches the kernel.
//
// Signatures are sigstore signatures, interoperable with the cosign CLI in
// both directions. Two formats are written and read:
//
//   - the sigstore bundle (FormatBundle, the default): a protobuf-JSON
//     sigstore bundle v0.3 holding a DSSE envelope around an in-toto
//     statement whose subject is the bundle's manifest digest (predicate type
//     https://sigstore.dev/cosign/sign/v1), stored as an OCI 1.1 referrer of
//     the manifest with artifactType
//     application/vnd.dev.sigstore.bundle.v0.3+json (through the referrers API,
//     or the referrers tag schema on registries without it);
//   - the legacy cosign signature (FormatLegacy): the tag sha256-<hex>.sig in
//     the bundle's repository, an image manifest whose layers are
//     simple-signing payloads (application/vnd.dev.cosign.simplesigning.v1+json)
//     naming the manifest digest, each with its base64 signature in the
//     annotation dev.cosignproject.cosign/signature.
//
// Verification always concerns a manifest digest, never a tag: callers
// resolve a tag once, verify that digest, and install exactly that digest.
// Which signers are acceptable is decided by a trust Policy (policy.yaml):
// ordered rules, each matching repositories by glob, the first match deciding;
// a reference no rule matches is refused. A rule accepts public keys (PEM
// files, inline PEM, or KMS URIs) and keyless identities (Fulcio certificates
// verified offline against a trusted_root.json, with a transparency-log entry
// and an observer timestamp required, and the certificate's subject and
// issuer matched exactly or by regular expression).
//
// A signature made with a key is verified by the key alone: like cosign
// verify --insecure-ignore-tlog, transparency-log entries and timestamps in
// it are not required (private keys are typically used without a public
// log). Keyless signatures always need both.
//
// Signatures live next to the bundle: CopySignatures copies a digest's
// signature manifests from a registry into kfm's local OCI layout cache, so
// that Verify against the cache needs no network.
//
// Trust is also about what a program does: a rule's capabilities
// (Capabilities) limit the helpers, program types, hooks, map types and
// instruction count of the programs it accepts, whether they may modify or
// redirect packets, or require a proven read-only observer;
// Policy.CheckCapabilities checks them against the facts bpf/analyze
// computes from the object that will load. A built-in list of helpers no
// packet program needs (DefaultDeniedHelpers) is refused unless a rule lifts
// them with allowHelpers. Refusals wrap ErrCapability (exit 3 in the CLI).
//
// The cryptography and the payload formats are sigstore's: keys are read and
// written with github.com/sigstore/sigstore (cosign's "ENCRYPTED SIGSTORE
// PRIVATE KEY" format included), bundles are built and verified with
// github.com/sigstore/sigstore-go, and registries are accessed with oras-go.
package verify
