package pki

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"time"
)

// Keys of a kubernetes.io/tls secret as the relay uses it.
const (
	KeyTLSCert = "tls.crt"
	KeyTLSKey  = "tls.key"
	KeyCACert  = "ca.crt"
)

// SecretError is a problem with one key of a secret.
type SecretError struct {
	// Key is the secret data key at fault, such as "tls.crt".
	Key string
	Err error
}

func (e *SecretError) Error() string { return fmt.Sprintf("data[%s]: %v", e.Key, e.Err) }

func (e *SecretError) Unwrap() error { return e.Err }

// KeyPair is a decoded and checked tls.crt, tls.key and ca.crt.
type KeyPair struct {
	// Cert is the first certificate of tls.crt.
	Cert *x509.Certificate
	// Intermediates are the rest of tls.crt.
	Intermediates []*x509.Certificate
	Key           crypto.Signer
	// Roots are the certificates of ca.crt.
	Roots []*x509.Certificate
}

// Verified is a secret whose tls.crt chain verified to its ca.crt.
type Verified struct {
	// Cert is the first certificate of tls.crt.
	Cert *x509.Certificate
	// Intermediates are the rest of tls.crt.
	Intermediates []*x509.Certificate
	// Roots are the certificates of ca.crt.
	Roots []*x509.Certificate
	// Chain is the verified chain from Cert to a root.
	Chain []*x509.Certificate
}

// DecodeKeyPair decodes tls.crt, tls.key and ca.crt and checks that the key
// matches the certificate, without verifying the chain.
func DecodeKeyPair(tlsCrt, tlsKey, caCrt []byte) (*KeyPair, error) {
	certs, err := DecodeCertificates(tlsCrt)
	if err != nil {
		return nil, &SecretError{KeyTLSCert, err}
	}
	key, err := DecodePrivateKey(tlsKey)
	if err != nil {
		return nil, &SecretError{KeyTLSKey, err}
	}
	if err := KeyMatchesCertificate(key, certs[0]); err != nil {
		return nil, &SecretError{KeyTLSKey, err}
	}
	kp := &KeyPair{Cert: certs[0], Intermediates: certs[1:], Key: key}
	if len(caCrt) > 0 {
		if kp.Roots, err = DecodeCertificates(caCrt); err != nil {
			return nil, &SecretError{KeyCACert, err}
		}
	}
	return kp, nil
}

// ValidateClientSecret checks a relay-client-tls-secret: the data decode,
// tls.key matches tls.crt, the chain verifies to ca.crt for client auth at
// now, and the one DNS SAN is cluster.
func ValidateClientSecret(tlsCrt, tlsKey, caCrt []byte, cluster string, now time.Time) (*Verified, error) {
	kp, err := validateLeaf(tlsCrt, tlsKey, caCrt, RoleClient, now)
	if err != nil {
		return nil, err
	}
	name, err := ClientIdentity(kp.Cert)
	if err != nil {
		return nil, &SecretError{KeyTLSCert, err}
	}
	if name != cluster {
		return nil, &SecretError{KeyTLSCert, fmt.Errorf("client certificate is for cluster %q, not this cluster %q: issue it with DNS name %q", name, cluster, cluster)}
	}
	return kp, nil
}

// ValidateServerSecret checks a relay-server-tls-secret: the data decode,
// tls.key matches tls.crt, the chain verifies to ca.crt for server auth at
// now, and the DNS SANs cover authority.
func ValidateServerSecret(tlsCrt, tlsKey, caCrt []byte, authority string, now time.Time) (*Verified, error) {
	kp, err := validateLeaf(tlsCrt, tlsKey, caCrt, RoleServer, now)
	if err != nil {
		return nil, err
	}
	if err := CoversAuthority(kp.Cert, authority); err != nil {
		return nil, &SecretError{KeyTLSCert, err}
	}
	return kp, nil
}

// validateLeaf decodes and checks a leaf secret.
func validateLeaf(tlsCrt, tlsKey, caCrt []byte, role Role, now time.Time) (*Verified, error) {
	certs, err := DecodeCertificates(tlsCrt)
	if err != nil {
		return nil, &SecretError{KeyTLSCert, err}
	}
	key, err := DecodePrivateKey(tlsKey)
	if err != nil {
		return nil, &SecretError{KeyTLSKey, err}
	}
	if err := KeyMatchesCertificate(key, certs[0]); err != nil {
		return nil, &SecretError{KeyTLSKey, err}
	}
	v := &Verified{Cert: certs[0], Intermediates: certs[1:]}
	if len(bytes.TrimSpace(caCrt)) == 0 {
		return nil, &SecretError{KeyCACert, fmt.Errorf("missing: add the root CA certificate that signed the chain")}
	}
	if v.Roots, err = DecodeCertificates(caCrt); err != nil {
		return nil, &SecretError{KeyCACert, err}
	}
	if v.Chain, err = VerifyChain(v.Cert, v.Intermediates, v.Roots, role, now); err != nil {
		return nil, &SecretError{KeyTLSCert, err}
	}
	return v, nil
}

// TLSCertificate returns the pair ready for crypto/tls: the leaf and the
// intermediates of tls.crt, the key, and the parsed leaf.
func (kp *KeyPair) TLSCertificate() *tls.Certificate {
	cert := &tls.Certificate{PrivateKey: kp.Key, Leaf: kp.Cert, Certificate: [][]byte{kp.Cert.Raw}}
	for _, c := range kp.Intermediates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

// Certified returns the pair as a CA that can issue: its issuers are the
// intermediates of tls.crt followed by the first root of ca.crt, unless
// tls.crt already ends with that root (or is it).
func (kp *KeyPair) Certified() *Certified {
	issuers := slices.Clone(kp.Intermediates)
	last := kp.Cert
	if len(issuers) > 0 {
		last = issuers[len(issuers)-1]
	}
	if len(kp.Roots) > 0 && !kp.Roots[0].Equal(last) {
		issuers = append(issuers, kp.Roots[0])
	}
	return &Certified{Cert: kp.Cert, Key: kp.Key, Issuers: issuers}
}
