package agent

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/config"
)

func TestAgentReplicasShareOneCertificateAndReconnectAfterAServerRestart(t *testing.T) {
	w := newWorld(t, nil)
	w.register("cluster-1")
	w.copySecret("relay-root-tls-secret", ns, "ca.crt")
	w.copySecret("relay-identity-token-secret", ns, "token")
	w.startAgent("cluster-1", ns)
	w.startAgent("cluster-1", ns)

	t.Run("every replica connects; only one bootstraps", func(t *testing.T) {
		w.eventually("two push and two pull streams", func() error { return w.connectedN("cluster-1", 2) })
		if m := w.metric(`relay_certificates_issued_total{call="bootstrap"}`); !strings.HasSuffix(m, " 1") {
			t.Errorf("bootstraps = %q, want 1: only the leader obtains the certificate", m)
		}
	})

	t.Run("a renewal request reaches both replicas and only the leader renews", func(t *testing.T) {
		if n := w.srv.RenewNow("cluster-1", "replicas"); n != 2 {
			t.Errorf("RenewNow reached %d pull streams, want 2", n)
		}
		w.eventually("one renewal", func() error {
			if m := w.metric(`relay_certificates_issued_total{call="renew"}`); !strings.HasSuffix(m, " 1") {
				return fmt.Errorf("renewals = %q", m)
			}
			return nil
		})
		// Each replica opens its streams with the new certificate before it
		// closes the old ones: three pull streams for a moment is expected.
		w.eventually("two push and two pull streams after the renewal", func() error { return w.connectedN("cluster-1", 2) })
	})

	t.Run("both replicas reconnect when the server restarts", func(t *testing.T) {
		w.stopServer()
		w.startServer(nil, nil)
		w.eventually("two push and two pull streams again", func() error { return w.connectedN("cluster-1", 2) })
	})

	t.Run("with no root secret the agent verifies the server with the client secret's ca.crt", func(t *testing.T) {
		const other = "no-root"
		if err := w.workload.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}); err != nil {
			t.Fatal(err)
		}
		src, err := w.secret(w.workload, ns, "relay-client-tls-secret")
		if err != nil {
			t.Fatal(err)
		}
		dst := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "relay-client-tls-secret"}, Type: corev1.SecretTypeTLS, Data: src.Data}
		if err := w.workload.Client.Create(t.Context(), dst); err != nil {
			t.Fatal(err)
		}
		w.startAgent("cluster-1", other)
		w.eventually("a third replica connects", func() error { return w.connectedN("cluster-1", 3) })
	})
}

func TestAgentAndServerInInsecureMode(t *testing.T) {
	w := newWorld(t, func(c *config.Server) { c.Insecure = true })
	w.register("cluster-1")
	_, agentURL := w.startAgent("cluster-1", ns, func(c *config.Agent) { c.Insecure = true })
	w.eventually("the agent connects without certificates", func() error { return w.connected("cluster-1") })
	if err := httpOK(agentURL + "/readyz"); err != nil {
		t.Errorf("agent readyz: %v", err)
	}
	if _, err := w.secret(w.mgmt, ns, "relay-root-tls-secret"); err == nil {
		t.Error("an insecure server generated a CA")
	}
}

func TestLeaderFailoverMovesTheRotator(t *testing.T) {
	w := newWorld(t, nil)
	w.register("cluster-1")
	w.copySecret("relay-root-tls-secret", ns, "ca.crt")
	w.copySecret("relay-identity-token-secret", ns, "token")
	_, _, stopFirst := w.startAgentWithStop("cluster-1", ns)
	w.eventually("the first replica bootstraps as the leader", func() error {
		_, err := w.clientSerial(ns, "cluster-1")
		return err
	})
	w.startAgent("cluster-1", ns)
	w.eventually("both replicas connect", func() error { return w.connectedN("cluster-1", 2) })

	stopFirst()
	w.eventually("the remaining replica alone is connected", func() error { return w.connectedN("cluster-1", 1) })
	// The request is repeated until a renewal shows, so more than one may
	// be signed before the metric is read: any renewal proves the point.
	w.eventually("the remaining replica takes the Lease and renews on request", func() error {
		w.srv.RenewNow("cluster-1", "failover")
		m := w.metric(`relay_certificates_issued_total{call="renew"}`)
		if n, err := strconv.Atoi(m[strings.LastIndex(m, " ")+1:]); err != nil || n < 1 {
			return fmt.Errorf("renewals = %q", m)
		}
		return nil
	})
}
