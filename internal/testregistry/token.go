package testregistry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	tokenService = "kfm-test-registry"
	tokenIssuer  = "kfm-test-token-server"
)

// tokenServer is a minimal Docker token server (distribution's
// "Token Authentication Specification"): GET /token with basic auth and
// scope parameters returns a JWT granting the requested scopes to the one
// known user. The registry verifies the tokens with the public key in
// certFile. It is a real protocol peer of both the registry and the client.
type tokenServer struct {
	realm    string
	certFile string
	key      *ecdsa.PrivateKey
	kid      string
	user     string
	password string
	srv      *http.Server
}

func startTokenServer(dir, user, password string) (*tokenServer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: tokenIssuer},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ts := &tokenServer{
		certFile: filepath.Join(dir, "token-signer.pem"),
		key:      key,
		kid:      token.GetJWKThumbprint(&key.PublicKey),
		user:     user,
		password: password,
	}
	if err := os.WriteFile(ts.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	// Listen on 127.0.0.1 but publish the realm as "localhost": a loopback
	// host other than the registry's 127.0.0.1.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ts.realm = "http://localhost:" + port + "/token"
	mux := http.NewServeMux()
	mux.HandleFunc("/token", ts.serveToken)
	ts.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ts.srv.Serve(ln) }()
	return ts, nil
}

func (ts *tokenServer) stop() { _ = ts.srv.Close() }

func (ts *tokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(ts.user)) != 1 ||
		subtle.ConstantTimeCompare([]byte(pass), []byte(ts.password)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="kfm-test-token"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	if r.URL.Query().Get("service") != tokenService {
		http.Error(w, "unknown service", http.StatusBadRequest)
		return
	}
	var access []*token.ResourceActions
	for _, scope := range r.URL.Query()["scope"] {
		// repository:name:pull,push
		parts := strings.Split(scope, ":")
		if len(parts) < 3 {
			continue
		}
		access = append(access, &token.ResourceActions{
			Type:    parts[0],
			Name:    strings.Join(parts[1:len(parts)-1], ":"),
			Actions: strings.Split(parts[len(parts)-1], ","),
		})
	}
	now := time.Now()
	var jti [8]byte
	_, _ = rand.Read(jti[:])
	claims := token.ClaimSet{
		Issuer:     tokenIssuer,
		Subject:    user,
		Audience:   token.AudienceList{tokenService},
		Expiration: now.Add(5 * time.Minute).Unix(),
		NotBefore:  now.Add(-time.Minute).Unix(),
		IssuedAt:   now.Unix(),
		JWTID:      hex.EncodeToString(jti[:]),
		Access:     access,
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: ts.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", ts.kid))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": raw, "access_token": raw, "expires_in": 300, "issued_at": now.Format(time.RFC3339)})
}
