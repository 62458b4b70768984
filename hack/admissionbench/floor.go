package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/procstat"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/webhook"
)

// floorCommand is the first argument that makes this program the floor.
const floorCommand = "floor"

// floorConfiguration is the floor's ValidatingWebhookConfiguration, and
// floorWebhook its one webhook.
const (
	floorConfiguration = "admissionbench-floor"
	floorWebhook       = "floor.admissionbench.meshrelay.dev"
)

// The floor is the least a validating webhook can be: Go's net/http over
// TLS 1.3 and HTTP/1.1 (which the API server uses for every webhook behind
// a Service; it would take HTTP/2 at 127.0.0.1), an ECDSA P-256
// certificate as relay-webhook's own, that decodes the AdmissionReview and
// admits it. Its
// process is called by the API server through a webhook configuration
// that is relay-webhook's secrets webhook but for its matchConditions and
// URL, so what it adds to a create is what any webhook adds: the API
// server building the AdmissionReview and the HTTPS round trip.
func floorMain(args []string) error {
	fs := flag.NewFlagSet(floorCommand, flag.ContinueOnError)
	listen := fs.String("listen", "", "address to serve on")
	cert := fs.String("cert", "", "serving certificate (PEM)")
	key := fs.String("key", "", "its key (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Addr:      *listen,
		Handler:   http.HandlerFunc(admitAll),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
	}
	return srv.ListenAndServeTLS("", "")
}

// admitAll answers an AdmissionReview with its uid, allowed.
func admitAll(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 7<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(admissionv1.AdmissionReview{
		TypeMeta: review.TypeMeta,
		Response: &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true},
	})
}

// startFloor runs the floor as a process of this program and registers
// it: relay-webhook's secrets webhook, as the overlay installed it, for
// the secrets named with floorSuffix.
func (e *environment) startFloor(ctx context.Context) error {
	ca, err := pki.NewRootCA(pki.Options{CommonName: "admissionbench floor CA", TTL: 24 * time.Hour})
	if err != nil {
		return err
	}
	leaf, err := ca.IssueServer(pki.Options{CommonName: "floor", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, TTL: 24 * time.Hour})
	if err != nil {
		return err
	}
	key, err := leaf.KeyPEM()
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(e.dir, "floor.crt"), filepath.Join(e.dir, "floor.key")
	if err := os.WriteFile(certFile, leaf.CertPEM(), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return err
	}
	if e.floorAddr, err = testenv.FreeAddr(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if e.floor, err = testenv.StartProcess(self, filepath.Join(e.dir, "floor.log"), floorCommand,
		"--listen", e.floorAddr, "--cert", certFile, "--key", keyFile); err != nil {
		return err
	}
	if e.floorPid, err = procstat.PidOf(filepath.Base(self), e.floorAddr); err != nil {
		return err
	}

	var relay admissionregistrationv1.ValidatingWebhookConfiguration
	if err := e.env.Clusters[0].Client.Get(ctx, client.ObjectKey{Name: config.DefaultValidatingWebhook}, &relay); err != nil {
		return fmt.Errorf("failed to read the ValidatingWebhookConfiguration %s: %w", config.DefaultValidatingWebhook, err)
	}
	var hook *admissionregistrationv1.ValidatingWebhook
	for i := range relay.Webhooks {
		h := relay.Webhooks[i]
		if h.ClientConfig.URL != nil && strings.HasSuffix(*h.ClientConfig.URL, webhook.SecretsPath) &&
			len(h.Rules) > 0 && slices.Contains(h.Rules[0].Operations, admissionregistrationv1.Create) {
			hook = relay.Webhooks[i].DeepCopy()
			break
		}
	}
	if hook == nil {
		return errors.New("the overlay's ValidatingWebhookConfiguration has no secrets webhook for creates")
	}
	url := "https://" + e.floorAddr + "/"
	hook.Name = floorWebhook
	hook.ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca.CAPEM()}
	hook.MatchConditions = []admissionregistrationv1.MatchCondition{{
		Name:       "floor-secrets",
		Expression: fmt.Sprintf("request.namespace == %q && object.metadata.name.endsWith(%q)", config.DefaultNamespace, floorSuffix),
	}}
	floorVWC := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: floorConfiguration},
		Webhooks:   []admissionregistrationv1.ValidatingWebhook{*hook},
	}
	if err := e.env.Clusters[0].Client.Create(ctx, floorVWC); err != nil {
		return fmt.Errorf("failed to register the floor: %w", err)
	}
	return e.waitFloor(ctx)
}

// waitFloor waits until the API server calls the floor: a create of a
// floor-named secret shows in the API server's call count of the floor.
func (e *environment) waitFloor(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	probe := renamed(e.fixtures.measured[0], floor)
	for {
		before, err := e.scrapeCallTimes(ctx)
		if err != nil {
			return err
		}
		if _, err := e.secrets().Create(ctx, probe.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			return fmt.Errorf("the floor did not admit secret %s: %w\n%s", probe.Name, err, e.floor.Tail(20))
		}
		after, err := e.scrapeCallTimes(ctx)
		if err != nil {
			return err
		}
		if after.floorCount > before.floorCount {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server does not call the floor\n%s", e.floor.Tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
