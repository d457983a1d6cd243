package verify

import "errors"

// Errors callers branch on. Verify wraps exactly one of ErrUnsigned,
// ErrUntrusted and ErrInvalidSignature when it refuses a digest.
var (
	// ErrUnsigned: no signature at all was found for the digest.
	ErrUnsigned = errors.New("no signature found")
	// ErrUntrusted: the policy has no rule for the reference, or signatures
	// exist but none was made by a signer the matching rule accepts.
	ErrUntrusted = errors.New("not signed by a trusted signer")
	// ErrInvalidSignature: every signature found is broken: it names another
	// digest, does not verify, or lacks the transparency-log entry,
	// timestamp or certificate chain the policy requires.
	ErrInvalidSignature = errors.New("invalid signature")
	// ErrPolicy: the trust policy file is malformed. The error names the
	// file and line.
	ErrPolicy = errors.New("invalid trust policy")
	// ErrKey: a key could not be read (wrong password, unknown format,
	// missing file, unsupported KMS scheme).
	ErrKey = errors.New("unusable key")
	// ErrNoPassword: a private key needs a password and there is no way to
	// ask for one (KFM_PASSWORD and COSIGN_PASSWORD unset, no terminal).
	ErrNoPassword = errors.New("no password for the private key")
	// ErrContent: the signed content itself does not match its digest in
	// the store (the registry or cache serves different bytes).
	ErrContent = errors.New("content does not match its digest")
)
