package testregistry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"

	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // auth: htpasswd
	_ "github.com/distribution/distribution/v3/registry/auth/token"    // auth: token
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

// Auth selects how the registry authenticates clients.
type Auth int

// Authentication variants.
const (
	// AuthNone: anyone may push and pull.
	AuthNone Auth = iota
	// AuthBasic: HTTP basic auth against an htpasswd file.
	AuthBasic
	// AuthToken: bearer tokens from a token server (on "localhost", while
	// the registry is addressed as 127.0.0.1, so that the token realm is a
	// loopback host other than the registry's).
	AuthToken
)

func (a Auth) String() string {
	return [...]string{"none", "basic", "token"}[a]
}

// Options configure Start.
type Options struct {
	Auth Auth
	// TLS serves HTTPS with a certificate from a CA made for the test
	// (see CAFile).
	TLS bool
	// Username and Password for AuthBasic and AuthToken; defaults
	// "kfm-test" and a random password.
	Username, Password string
	// Listener, when set, is where the registry serves (e.g. a loopback
	// socket opened inside a network namespace); default 127.0.0.1:0.
	Listener net.Listener
	// RefuseCatalog, when non-zero, is the HTTP status (401, 403 or 404)
	// the registry answers GET /v2/_catalog with, as registries that do
	// not offer their catalog do (Docker Hub, GHCR). Distribution has no
	// setting for this, so a handler in front of it answers that path;
	// everything else reaches Distribution unchanged.
	RefuseCatalog int
	// CatalogPageSize, when non-zero, caps the repositories per catalog
	// page (Distribution's catalog.maxentries, default 1000), so that
	// clients must follow the Link header.
	CatalogPageSize int
}

// Registry is a running registry.
type Registry struct {
	opts    Options
	host    string
	root    string
	caFile  string
	caPool  *x509.CertPool
	srv     *http.Server
	app     *handlers.App
	token   *tokenServer
	stopped sync.Once
}

var quietOnce sync.Once

func quiet() {
	quietOnce.Do(func() {
		if os.Getenv("KFM_REGISTRY_LOG") == "1" {
			return
		}
		// Distribution's logging is process-wide logrus.
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.PanicLevel)
	})
}

// TB is the part of testing.TB Start uses, so that tools other than tests
// (make demo) can run a registry with their own cleanup list.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Start runs a registry until the test ends (or Stop).
func Start(tb TB, opts Options) *Registry {
	tb.Helper()
	quiet()
	if opts.Auth != AuthNone {
		if opts.Username == "" {
			opts.Username = "kfm-test"
		}
		if opts.Password == "" {
			var b [12]byte
			if _, err := rand.Read(b[:]); err != nil {
				tb.Fatal(err)
			}
			opts.Password = hex.EncodeToString(b[:])
		}
	}
	dir := tb.TempDir()
	r := &Registry{opts: opts, root: filepath.Join(dir, "storage")}

	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			tb.Fatalf("testregistry: listen: %v", err)
		}
	}
	r.host = ln.Addr().String()

	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": r.root},
		"delete":      configuration.Parameters{"enabled": true},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.HTTP.Secret = "kfm-test-secret"
	// Distribution's YAML parser defaults catalog.maxentries to 1000; a
	// configuration built in Go must set it, or the catalog lists nothing.
	cfg.Catalog.MaxEntries = 1000
	if opts.CatalogPageSize > 0 {
		cfg.Catalog.MaxEntries = opts.CatalogPageSize
	}
	cfg.HTTP.Addr = r.host

	switch opts.Auth {
	case AuthBasic:
		hash, err := bcrypt.GenerateFromPassword([]byte(opts.Password), bcrypt.MinCost)
		if err != nil {
			tb.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(opts.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "kfm-test", "path": htpasswd}}
	case AuthToken:
		ts, err := startTokenServer(dir, opts.Username, opts.Password)
		if err != nil {
			tb.Fatalf("testregistry: token server: %v", err)
		}
		r.token = ts
		tb.Cleanup(ts.stop)
		cfg.Auth = configuration.Auth{"token": configuration.Parameters{
			"realm":          ts.realm,
			"service":        tokenService,
			"issuer":         tokenIssuer,
			"rootcertbundle": ts.certFile,
		}}
	}

	var handler http.Handler
	func() {
		defer func() {
			if p := recover(); p != nil {
				ln.Close()
				tb.Fatalf("testregistry: distribution refused the configuration: %v", p)
			}
		}()
		r.app = handlers.NewApp(context.Background(), cfg)
		handler = r.app
	}()
	if opts.RefuseCatalog != 0 {
		handler = refuseCatalog(handler, opts.RefuseCatalog)
	}
	r.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	if opts.TLS {
		cert, caPEM, err := makeCerts()
		if err != nil {
			tb.Fatal(err)
		}
		r.caFile = filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(r.caFile, caPEM, 0o644); err != nil {
			tb.Fatal(err)
		}
		r.caPool = x509.NewCertPool()
		r.caPool.AppendCertsFromPEM(caPEM)
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	go func() { _ = r.srv.Serve(ln) }()
	tb.Cleanup(r.Stop)
	return r
}

// Host is the registry's host:port (127.0.0.1:N), as it appears in
// references.
func (r *Registry) Host() string { return r.host }

// Ref returns the reference host/repository:tag.
func (r *Registry) Ref(repository, tag string) string { return r.host + "/" + repository + ":" + tag }

// URL is the registry's base URL (http:// or https://).
func (r *Registry) URL() string {
	if r.opts.TLS {
		return "https://" + r.host
	}
	return "http://" + r.host
}

// TLS reports whether the registry serves HTTPS.
func (r *Registry) TLS() bool { return r.opts.TLS }

// CAFile is the PEM file of the CA that signed the registry's certificate
// (empty without TLS).
func (r *Registry) CAFile() string { return r.caFile }

// CAPool holds that CA.
func (r *Registry) CAPool() *x509.CertPool { return r.caPool }

// Username of the registry's only user (empty without auth).
func (r *Registry) Username() string { return r.opts.Username }

// Password of the registry's only user.
func (r *Registry) Password() string { return r.opts.Password }

// Auth is the authentication variant.
func (r *Registry) Auth() Auth { return r.opts.Auth }

// TokenRealm is the token server's URL (AuthToken only).
func (r *Registry) TokenRealm() string {
	if r.token == nil {
		return ""
	}
	return r.token.realm
}

// StorageRoot is the root directory of the registry's filesystem storage.
func (r *Registry) StorageRoot() string { return r.root }

// BlobPath is the file that holds the blob (or manifest) d in the
// registry's storage; writing to it changes what the registry serves.
func (r *Registry) BlobPath(d digest.Digest) string {
	hex := d.Encoded()
	return filepath.Join(r.root, "docker", "registry", "v2", "blobs", d.Algorithm().String(), hex[:2], hex, "data")
}

// Stop shuts the registry down (idempotent; also done when the test ends).
// Connections are refused afterwards.
func (r *Registry) Stop() {
	r.stopped.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.srv.Shutdown(ctx)
		_ = r.app.Shutdown()
	})
}

// makeCerts makes a CA and a server certificate for 127.0.0.1 and localhost
// signed by it.
func makeCerts() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfm test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: nil}, caPEM, nil
}

// String describes the registry for test logs.
func (r *Registry) String() string {
	return fmt.Sprintf("registry %s (auth %s, tls %v)", r.host, r.opts.Auth, r.opts.TLS)
}

// refuseCatalog answers GET /v2/_catalog with status and a Distribution-style
// error body, and passes every other request to next.
func refuseCatalog(next http.Handler, status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v2/_catalog" {
			next.ServeHTTP(w, req)
			return
		}
		code := map[int]string{http.StatusUnauthorized: "UNAUTHORIZED", http.StatusForbidden: "DENIED"}[status]
		if code == "" {
			code = "UNSUPPORTED"
		}
		w.Header().Set("Content-Type", "application/json")
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="kfm-test"`)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"the catalog API is not offered"}]}`, code)
	})
}
