package faultproxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Cert is the kind of certificate a TLS proxy presents.
type Cert int

const (
	// CertNone: plain HTTP.
	CertNone Cert = iota
	// CertValid: for 127.0.0.1, signed by the CA in CAFile.
	CertValid
	// CertUntrusted: for 127.0.0.1, signed by a CA that is not in CAFile.
	CertUntrusted
	// CertExpired: for 127.0.0.1, signed by the CA in CAFile, expired an
	// hour ago.
	CertExpired
	// CertWrongHost: signed by the CA in CAFile, for
	// registry.example.invalid only.
	CertWrongHost
)

func (c Cert) String() string {
	return [...]string{"none", "valid", "untrusted", "expired", "wrong-host"}[c]
}

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newCA(name string, now time.Time) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-48 * time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key, der: der}, nil
}

// serverTLS makes the server configuration for kind and writes the trusted
// CA to dir/ca.pem.
func serverTLS(dir string, kind Cert) (*tls.Config, string, error) {
	now := time.Now()
	trusted, err := newCA("faultproxy test CA", now)
	if err != nil {
		return nil, "", err
	}
	signer := trusted
	if kind == CertUntrusted {
		if signer, err = newCA("faultproxy unknown CA", now); err != nil {
			return nil, "", err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	switch kind {
	case CertExpired:
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	case CertWrongHost:
		tmpl.Subject.CommonName = "registry.example.invalid"
		tmpl.IPAddresses = nil
		tmpl.DNSNames = []string{"registry.example.invalid"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, &key.PublicKey, signer.key)
	if err != nil {
		return nil, "", err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: trusted.der}), 0o644); err != nil {
		return nil, "", err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, signer.der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	return cfg, caFile, nil
}
