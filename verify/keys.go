package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"golang.org/x/term"
)

// Environment variables holding the password of a private key, in the order
// they are consulted. COSIGN_PASSWORD makes scripts written for cosign work
// unchanged.
const (
	EnvPassword       = "KFM_PASSWORD"
	EnvCosignPassword = "COSIGN_PASSWORD"
)

// PassFunc returns the password of a private key. confirm asks for it twice
// (when a new key is written).
type PassFunc = cryptoutils.PassFunc

// PasswordFunc returns the PassFunc kfm uses: the value of KFM_PASSWORD, else
// of COSIGN_PASSWORD (an empty value is an empty password), else a prompt on
// tty, written to prompt, when tty is a terminal; otherwise it fails with
// ErrNoPassword.
func PasswordFunc(tty *os.File, prompt io.Writer) PassFunc {
	return func(confirm bool) ([]byte, error) {
		for _, name := range []string{EnvPassword, EnvCosignPassword} {
			if pw, ok := os.LookupEnv(name); ok {
				return []byte(pw), nil
			}
		}
		if tty == nil || !term.IsTerminal(int(tty.Fd())) {
			return nil, fmt.Errorf("%w: set %s (or %s), or run on a terminal to be asked", ErrNoPassword, EnvPassword, EnvCosignPassword)
		}
		read := func(what string) ([]byte, error) {
			fmt.Fprint(prompt, what)
			pw, err := term.ReadPassword(int(tty.Fd()))
			fmt.Fprintln(prompt)
			return pw, err
		}
		pw, err := read("Enter password for private key: ")
		if err != nil || !confirm {
			return pw, err
		}
		again, err := read("Enter password for private key again: ")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(pw, again) {
			return nil, errors.New("passwords do not match")
		}
		return pw, nil
	}
}

// StaticPassword returns a PassFunc that always answers pw.
func StaticPassword(pw string) PassFunc { return cryptoutils.StaticPasswordFunc([]byte(pw)) }

// Fingerprint identifies a public key: "sha256:" and the hex SHA-256 of its
// PKIX (DER) encoding. It is what Result and the lockfile record for a key.
// (cosign's key hint is the base64 of the same hash.)
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrKey, err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// isKMS reports whether ref is a KMS URI (scheme://...) rather than a path.
func isKMS(ref string) bool {
	i := strings.Index(ref, "://")
	return i > 0 && !strings.ContainsAny(ref[:i], `/\.`)
}

// SigningKey signs with a private key: a cosign key file or a KMS key. It
// implements sigstore-go's sign.Keypair, so it also serves as the key pair
// of keyless signing (where a certificate authority certifies its public
// key).
type SigningKey struct {
	sv          signature.SignerVerifier
	pub         crypto.PublicKey
	alg         signature.AlgorithmDetails
	fingerprint string
	hint        []byte
}

// NewSigningKey wraps a sigstore SignerVerifier (for instance one made with
// signature.LoadDefaultSignerVerifier from an in-memory key).
func NewSigningKey(sv signature.SignerVerifier) (*SigningKey, error) {
	pub, err := sv.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %w", ErrKey, err)
	}
	alg, err := signature.GetDefaultAlgorithmDetails(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	fp, err := Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	sum, _ := hex.DecodeString(strings.TrimPrefix(fp, "sha256:"))
	return &SigningKey{
		sv:          sv,
		pub:         pub,
		alg:         alg,
		fingerprint: fp,
		hint:        []byte(base64.StdEncoding.EncodeToString(sum)),
	}, nil
}

// LoadSigningKey loads the private key ref: a KMS URI (scheme://...; see
// LoadPublicKey), or a PEM file: cosign's "ENCRYPTED SIGSTORE PRIVATE KEY"
// (and the older "ENCRYPTED COSIGN PRIVATE KEY"), PKCS#8, SEC 1 or PKCS#1.
// pf is asked for the password of encrypted keys only.
func LoadSigningKey(ctx context.Context, ref string, pf PassFunc) (*SigningKey, error) {
	if isKMS(ref) {
		sv, err := kms.Get(ctx, ref, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKey, ref, err)
		}
		return NewSigningKey(sv)
	}
	data, err := readCapped(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return ParseSigningKey(ref, data, pf)
}

// ParseSigningKey reads a PEM private key (see LoadSigningKey); ref names it
// in messages.
func ParseSigningKey(ref string, data []byte, pf PassFunc) (*SigningKey, error) {
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(data, onlyForEncrypted(data, pf))
	if err != nil {
		if errors.Is(err, ErrNoPassword) {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		if strings.Contains(err.Error(), "decryption failed") {
			return nil, fmt.Errorf("%w: %s: wrong password (%s/%s)", ErrKey, ref, EnvPassword, EnvCosignPassword)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrKey, ref, err)
	}
	sv, err := signature.LoadDefaultSignerVerifier(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKey, ref, err)
	}
	return NewSigningKey(sv)
}

// onlyForEncrypted returns pf for encrypted PEM blocks and nil otherwise, so
// that nobody is asked for the password of a plain key.
func onlyForEncrypted(data []byte, pf PassFunc) PassFunc {
	if bytes.Contains(data, []byte("-----BEGIN ENCRYPTED")) || bytes.Contains(data, []byte("Proc-Type: 4,ENCRYPTED")) {
		if pf == nil {
			return func(bool) ([]byte, error) {
				return nil, fmt.Errorf("%w: the key is encrypted", ErrNoPassword)
			}
		}
		return pf
	}
	return nil
}

// PublicKey is the signer's public key.
func (s *SigningKey) PublicKey() crypto.PublicKey { return s.pub }

// Fingerprint is the signer's key fingerprint (see Fingerprint).
func (s *SigningKey) Fingerprint() string { return s.fingerprint }

// The sign.Keypair methods, for sigstore-go.

// GetHashAlgorithm returns the hash the signing algorithm uses.
func (s *SigningKey) GetHashAlgorithm() protocommon.HashAlgorithm { return s.alg.GetProtoHashType() }

// GetSigningAlgorithm returns the signing algorithm of the key.
func (s *SigningKey) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return s.alg.GetSignatureAlgorithm()
}

// GetHint returns cosign's key hint: base64 of the SHA-256 of the PKIX key.
func (s *SigningKey) GetHint() []byte { return s.hint }

// GetKeyAlgorithm returns ECDSA, RSA or ED25519.
func (s *SigningKey) GetKeyAlgorithm() string {
	switch s.pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA"
	case *rsa.PublicKey:
		return "RSA"
	case ed25519.PublicKey:
		return "ED25519"
	}
	return ""
}

// GetPublicKey returns the public key.
func (s *SigningKey) GetPublicKey() crypto.PublicKey { return s.pub }

// GetPublicKeyPem returns the public key in PEM form.
func (s *SigningKey) GetPublicKeyPem() (string, error) {
	b, err := cryptoutils.MarshalPublicKeyToPEM(s.pub)
	return string(b), err
}

// SignData signs data and returns the signature and the digest that was
// signed (nil for pure Ed25519, which signs the data itself).
func (s *SigningKey) SignData(ctx context.Context, data []byte) ([]byte, []byte, error) {
	opts := []signature.SignOption{options.WithContext(ctx)}
	var digest []byte
	if h := s.alg.GetHashType(); h != crypto.Hash(0) {
		hh := h.New()
		hh.Write(data)
		digest = hh.Sum(nil)
		opts = append(opts, options.WithDigest(digest))
	}
	sig, err := s.sv.SignMessage(bytes.NewReader(data), opts...)
	return sig, digest, err
}

// PublicKey is an accepted public key of a trust policy.
type PublicKey struct {
	// Ref is where the key came from: a file path, a KMS URI, or "inline".
	Ref string
	// Fingerprint identifies the key (see Fingerprint).
	Fingerprint string
	key         crypto.PublicKey
	verifier    signature.Verifier
}

// Key is the public key itself.
func (k *PublicKey) Key() crypto.PublicKey { return k.key }

// NewPublicKey wraps a public key.
func NewPublicKey(ref string, pub crypto.PublicKey) (*PublicKey, error) {
	v, err := signature.LoadDefaultVerifier(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKey, ref, err)
	}
	fp, err := Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	return &PublicKey{Ref: ref, Fingerprint: fp, key: pub, verifier: v}, nil
}

// ParsePublicKey reads a PEM public key ("PUBLIC KEY", as cosign writes it,
// or "RSA PUBLIC KEY").
func ParsePublicKey(ref string, pemData []byte) (*PublicKey, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemData)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not a PEM public key: %w", ErrKey, ref, err)
	}
	return NewPublicKey(ref, pub)
}

// LoadPublicKey loads the public key ref: a PEM file, or a KMS URI
// (scheme://...), resolved by sigstore's KMS registry: providers compiled in,
// else a sigstore KMS plugin program "sigstore-kms-<scheme>" on PATH (the
// protocol cosign uses for plugins).
func LoadPublicKey(ctx context.Context, ref string) (*PublicKey, error) {
	if isKMS(ref) {
		sv, err := kms.Get(ctx, ref, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKey, ref, err)
		}
		pub, err := sv.PublicKey(options.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKey, ref, err)
		}
		return NewPublicKey(ref, pub)
	}
	data, err := readCapped(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return ParsePublicKey(ref, data)
}

// KeyPair is a new key pair in cosign's file formats.
type KeyPair struct {
	// PrivatePEM is the private key, encrypted with the password
	// ("ENCRYPTED SIGSTORE PRIVATE KEY": scrypt + secretbox, as cosign
	// generate-key-pair writes it).
	PrivatePEM []byte
	// PublicPEM is the public key ("PUBLIC KEY", PKIX).
	PublicPEM []byte
	// Fingerprint identifies the public key.
	Fingerprint string
}

// GenerateKeyPair makes a new ECDSA P-256 key pair, the private key
// encrypted with the password pf returns (asked with confirmation; an empty
// password is allowed, as with cosign).
func GenerateKeyPair(pf PassFunc) (*KeyPair, error) {
	if pf == nil {
		return nil, fmt.Errorf("%w: a password function is required", ErrNoPassword)
	}
	// pemEncodeKeyPair treats a nil password as "do not encrypt": always
	// encrypt, with the empty password if that is what was given.
	enc := func(confirm bool) ([]byte, error) {
		pw, err := pf(confirm)
		if err == nil && pw == nil {
			pw = []byte{}
		}
		return pw, err
	}
	priv, pub, err := cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), enc)
	if err != nil {
		return nil, err
	}
	pk, err := ParsePublicKey("generated", pub)
	if err != nil {
		return nil, err
	}
	return &KeyPair{PrivatePEM: priv, PublicPEM: pub, Fingerprint: pk.Fingerprint}, nil
}

// WriteKeyPair generates a key pair and writes prefix.key (mode 0600) and
// prefix.pub. It refuses to overwrite existing files.
func WriteKeyPair(prefix string, pf PassFunc) (*KeyPair, error) {
	keyPath, pubPath := prefix+".key", prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s already exists: remove it or choose another --output-key-prefix", p)
		}
	}
	kp, err := GenerateKeyPair(pf)
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(prefix); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	// 0600 whatever the umask (which can only take bits away, and a
	// umask of 0377 would leave a key its owner cannot read).
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(keyPath)
		return nil, err
	}
	if _, err := f.Write(kp.PrivatePEM); err != nil {
		f.Close()
		os.Remove(keyPath)
		return nil, err
	}
	if err := f.Close(); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	if err := os.WriteFile(pubPath, kp.PublicPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	if err := os.Chmod(pubPath, 0o644); err != nil {
		os.Remove(keyPath)
		os.Remove(pubPath)
		return nil, err
	}
	return kp, nil
}
