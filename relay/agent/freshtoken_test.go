package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// TestRegisteringAgainReplacesAValidCertificateWithoutARestart: relayctl
// register is the way back for an agent whose certificate the server no
// longer admits (revoked, or issued to an earlier registration) although it
// has not expired. The running agent sees the fresh token and bootstraps
// with it.
func TestRegisteringAgainReplacesAValidCertificateWithoutARestart(t *testing.T) {
	w := newWorld(t, nil)
	srv, ag := config.DefaultServer(), config.DefaultAgent()
	register := func() string {
		t.Helper()
		if _, err := fleet.Register(t.Context(), w.mgmt.Client, w.workload.Client, fleet.RegisterOptions{Name: "cluster-1", Server: &srv, Agent: &ag}); err != nil {
			t.Fatalf("relayctl register cluster-1: %v", err)
		}
		s, err := w.secret(w.workload, ns, "relay-identity-token-secret")
		if err != nil {
			t.Fatal(err)
		}
		return string(s.Data["token"])
	}
	first := register()
	w.startAgent("cluster-1", ns)
	var serial string
	w.eventually("the agent bootstraps with its token", func() (err error) {
		serial, err = w.clientSerial(ns, "cluster-1")
		return err
	})
	usedToken := func() string {
		s, _ := w.secret(w.workload, ns, "relay-client-tls-secret")
		return s.Annotations[meshv1alpha1.BootstrapTokenUsedAnnotation]
	}
	if got := usedToken(); got != bootstraptoken.Hash(first) {
		t.Errorf("client secret records token %q, want the hash of the one it bootstrapped with", got)
	}

	second := register()
	w.eventually("the running agent bootstraps with the fresh token", func() error {
		s, err := w.clientSerial(ns, "cluster-1")
		if err == nil && s == serial {
			err = fmt.Errorf("serial still %s", s)
		}
		return err
	})
	if got := usedToken(); got != bootstraptoken.Hash(second) {
		t.Errorf("client secret records token %q, want the hash of the fresh one", got)
	}
	if m := w.metric(`relay_certificates_issued_total{call="bootstrap"}`); !strings.HasSuffix(m, " 2") {
		t.Errorf("bootstraps = %q, want 2", m)
	}
	w.eventually("the agent connects with the new certificate", func() error { return w.connected("cluster-1") })
}
