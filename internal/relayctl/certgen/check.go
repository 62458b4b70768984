package certgen

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// check decodes every secret of sets with pkg/pki and verifies it for what
// it is, and that every workload cluster trusts the management cluster's
// relay root: the chains Generate is about to return must work.
func check(sets []ClusterSecrets, opts Options) error {
	var mgmtRoot []byte
	for _, set := range sets {
		for i := range set.Secrets {
			s := &set.Secrets[i]
			if err := checkSecret(s, set.Cluster, opts.Authority, opts.Now); err != nil {
				return fmt.Errorf("cluster %s: secret %s/%s: %w", set.Cluster, s.Namespace, s.Name, err)
			}
			if s.Name != config.DefaultRootTLSSecret {
				continue
			}
			if mgmtRoot == nil {
				mgmtRoot = s.Data[pki.KeyCACert]
			} else if !bytes.Equal(mgmtRoot, s.Data[pki.KeyCACert]) {
				return fmt.Errorf("cluster %s: secret %s/%s: ca.crt is not the management cluster's relay root", set.Cluster, s.Namespace, s.Name)
			}
		}
	}
	return nil
}

// checkSecret verifies one generated secret of cluster.
func checkSecret(s *corev1.Secret, cluster, authority string, now time.Time) error {
	d := s.Data
	switch s.Name {
	case config.DefaultRootTLSSecret:
		roots, err := pki.DecodeCertificates(d[pki.KeyCACert])
		if err != nil {
			return &pki.SecretError{Key: pki.KeyCACert, Err: err}
		}
		if _, err := pki.VerifyChain(roots[0], nil, nil, pki.RoleRoot, now); err != nil {
			return &pki.SecretError{Key: pki.KeyCACert, Err: err}
		}
		if len(d[pki.KeyTLSKey]) == 0 {
			return nil
		}
		_, err = pki.DecodeKeyPair(d[pki.KeyTLSCert], d[pki.KeyTLSKey], d[pki.KeyCACert])
		return err
	case config.DefaultSigningTLSSecret:
		return checkCA(d[pki.KeyTLSCert], d[pki.KeyTLSKey], d[pki.KeyCACert], d[pki.KeyTLSCert], now)
	case config.DefaultServerTLSSecret:
		_, err := pki.ValidateServerSecret(d[pki.KeyTLSCert], d[pki.KeyTLSKey], d[pki.KeyCACert], authority, now)
		return err
	case config.DefaultClientTLSSecret:
		_, err := pki.ValidateClientSecret(d[pki.KeyTLSCert], d[pki.KeyTLSKey], d[pki.KeyCACert], cluster, now)
		return err
	case config.DefaultIstioCASecret:
		return checkCA(d[pki.IstioCACertKey], d[pki.IstioCAKeyKey], d[pki.IstioRootCertKey], d[pki.IstioCertChainKey], now)
	}
	return errors.New("not a secret certgen makes")
}

// checkCA verifies an intermediate CA: its key matches, and chain (the CA
// first, then its issuers) verifies to root as a CA that may sign.
func checkCA(crt, key, root, chain []byte, now time.Time) error {
	kp, err := pki.DecodeKeyPair(crt, key, root)
	if err != nil {
		return err
	}
	certs, err := pki.DecodeCertificates(chain)
	if err != nil {
		return err
	}
	if !certs[0].Equal(kp.Cert) {
		return errors.New("certificate chain does not start with the CA certificate")
	}
	_, err = pki.VerifyChain(kp.Cert, certs[1:], kp.Roots, pki.RoleSigningCA, now)
	return err
}
