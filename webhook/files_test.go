package webhook_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/webhook"
)

// TestFilesModeServesAndReloadsTheMountedCertificate runs relay-webhook
// with --certificates=files, as the cert-manager overlay does: it serves
// tls.crt from the folder, and a renewed pair written there is served to
// new handshakes without a restart.
func TestFilesModeServesAndReloadsTheMountedCertificate(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"files"}})
	f := newPKI(t)
	dir := t.TempDir()
	write := func() *pki.Certified {
		c, err := f.signing.IssueServer(pki.Options{DNSNames: []string{"localhost"}, TTL: year})
		if err != nil {
			t.Fatal(err)
		}
		key, _ := c.KeyPEM()
		// Write the key first and the certificate last, as a secret volume
		// update swaps both at once.
		for name, data := range map[string][]byte{"tls.key": key, "tls.crt": c.CertPEM()} {
			if err := os.WriteFile(filepath.Join(dir, name+".tmp"), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range []string{"tls.key", "tls.crt"} {
			if err := os.Rename(filepath.Join(dir, name+".tmp"), filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	first := write()

	cfg := config.DefaultWebhook()
	cfg.Cluster, cfg.ServerAddress = cluster, "relay.example:9900"
	cfg.Certificates, cfg.CertDir = config.CertificatesFiles, dir
	port := freePort(t)
	cfg.ListenAddress = fmt.Sprintf("127.0.0.1:%d", port)
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := webhook.New(webhook.Options{Config: cfg, RESTConfig: env.Clusters[0].Config, Log: logr.Discard(), MetricsListener: mlis})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("relay-webhook: %v", err)
		}
	})

	served := func() (*pki.Certified, error) {
		conn, err := tls.Dial("tcp", cfg.ListenAddress, &tls.Config{RootCAs: mustPool(t, f.root.CAPEM()), ServerName: "localhost"})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return &pki.Certified{Cert: conn.ConnectionState().PeerCertificates[0]}, nil
	}
	testenv.Eventually(t, "the webhook serves the certificate from the folder", time.Minute, func() error {
		got, err := served()
		if err != nil {
			return err
		}
		if !got.Cert.Equal(first.Cert) {
			return errors.New("another certificate is served")
		}
		return nil
	})
	second := write()
	testenv.Eventually(t, "the renewed certificate is served without a restart", time.Minute, func() error {
		got, err := served()
		if err != nil {
			return err
		}
		if !got.Cert.Equal(second.Cert) {
			return errors.New("still the first certificate")
		}
		return nil
	})
}
