package webhook_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func TestWebhookMetricsServeBuildInfoBesideControllerRuntimesAndNoProfiles(t *testing.T) {
	e := startWebhook(t, false)
	url := "http://" + e.metrics

	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics answered %d, want 200 (a metric in both registries makes it 500)", resp.StatusCode)
	}
	got := testenv.ScrapeMetrics(url + "/metrics")
	for _, prefix := range []string{"relay_webhook_build_info{", "controller_runtime_webhook_requests_total{", "rest_client_requests_total{", "go_goroutines"} {
		found := false
		for name := range got {
			found = found || strings.HasPrefix(name, prefix)
		}
		if !found {
			t.Errorf("/metrics has no %s sample", prefix)
		}
	}

	resp, err = http.Get(url + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ answered %d, want 404: profiles are served only with --enable-profiling", resp.StatusCode)
	}
}

// TestWebhookCertificateExpiryIsOfTheCertificateItServes compares
// relay_webhook_certificate_expiry_timestamp_seconds with the serving
// certificate a TLS handshake with the webhook gets, and with the CA of
// the validating configuration's caBundle that signed it.
func TestWebhookCertificateExpiryIsOfTheCertificateItServes(t *testing.T) {
	e := startWebhook(t, false)
	// Not verified: the certificate is what the test looks at.
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	serving := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := e.cluster.Client.Get(e.ctx, types.NamespacedName{Name: config.DefaultValidatingWebhook}, &vwc); err != nil {
		t.Fatal(err)
	}
	cas, err := pki.DecodeCertificates(vwc.Webhooks[0].ClientConfig.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	var ca *x509.Certificate
	for _, c := range cas {
		if serving.CheckSignatureFrom(c) == nil {
			ca = c
		}
	}
	if ca == nil {
		t.Fatal("no CA of caBundle signed the serving certificate")
	}
	got := testenv.ScrapeMetrics("http://" + e.metrics + "/metrics")
	for label, cert := range map[string]*x509.Certificate{"serving": serving, "ca": ca} {
		name := `relay_webhook_certificate_expiry_timestamp_seconds{certificate="` + label + `"}`
		if v, ok := got[name]; !ok || int64(v) != cert.NotAfter.Unix() {
			t.Errorf("%s = %v (present %v), want %d (%s)", name, v, ok, cert.NotAfter.Unix(), cert.NotAfter)
		}
	}
}
