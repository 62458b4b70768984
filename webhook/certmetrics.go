package webhook

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Values of the certificate label of the expiry metric.
const (
	certificateServing = "serving"
	certificateCA      = "ca"
)

// certificateExpiry is relay_webhook_certificate_expiry_timestamp_seconds:
// when the serving certificate the webhook serves now, and the CA that
// signed it (the one in caBundle the API server verifies it with),
// expire. It reads them at each scrape, so a rotation shows at once; a
// certificate it cannot read has no sample.
type certificateExpiry struct {
	desc *prometheus.Desc
	// certificates returns the serving certificate and its CA, either nil
	// when unknown.
	certificates func() (serving, ca *x509.Certificate)
}

var _ prometheus.Collector = (*certificateExpiry)(nil)

func newCertificateExpiry(certificates func() (serving, ca *x509.Certificate)) *certificateExpiry {
	return &certificateExpiry{
		desc: prometheus.NewDesc("relay_webhook_certificate_expiry_timestamp_seconds",
			`When relay-webhook's own certificate expires (unix seconds): certificate="serving" is the one it serves admission reviews with, "ca" the CA that signed it.`,
			[]string{"certificate"}, nil),
		certificates: certificates,
	}
}

// Describe sends the metric's description.
func (e *certificateExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- e.desc }

// Collect sends a sample for each certificate known now.
func (e *certificateExpiry) Collect(ch chan<- prometheus.Metric) {
	serving, ca := e.certificates()
	for _, c := range []struct {
		label string
		cert  *x509.Certificate
	}{{certificateServing, serving}, {certificateCA, ca}} {
		if c.cert != nil {
			ch <- prometheus.MustNewConstMetric(e.desc, prometheus.GaugeValue, float64(c.cert.NotAfter.Unix()), c.label)
		}
	}
}

// filesCertificates reads the serving certificate from dir/tls.crt, as
// controller-runtime serves it with --certificates=files, and its CA from
// dir/ca.crt (cert-manager writes it beside tls.crt) or else from the
// chain in tls.crt: the certificate of either that signed it. A
// self-signed serving certificate (cert-manager's SelfSigned issuer) is its
// own CA: caBundle holds it.
func filesCertificates(dir string) func() (serving, ca *x509.Certificate) {
	return func() (*x509.Certificate, *x509.Certificate) {
		chain := readCertificates(filepath.Join(dir, relaysecret.KeyTLSCert))
		if len(chain) == 0 {
			return nil, nil
		}
		serving := chain[0]
		for _, c := range append(readCertificates(filepath.Join(dir, relaysecret.KeyCACert)), chain[1:]...) {
			if bytes.Equal(c.Raw, serving.Raw) || serving.CheckSignatureFrom(c) == nil {
				return serving, c
			}
		}
		return serving, nil
	}
}

// readCertificates returns the certificates of the PEM file at path, or
// none when it cannot be read or decoded.
func readCertificates(path string) []*x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	certs, err := pki.DecodeCertificates(data)
	if err != nil {
		return nil
	}
	return certs
}
