package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/config"
)

// TestAgentRenewsWhenTheGracePeriodStarts lets a one-minute certificate
// reach its renewal time (ratio 0.5, no jitter): about 33 seconds.
func TestAgentRenewsWhenTheGracePeriodStarts(t *testing.T) {
	w := newWorld(t, func(c *config.Server) { c.ClientCertificateTTL = metav1.Duration{Duration: time.Minute} })
	w.register("cluster-1")
	w.copySecret("relay-root-tls-secret", ns, "ca.crt")
	w.copySecret("relay-identity-token-secret", ns, "token")
	w.startAgent("cluster-1", ns)
	var first string
	w.eventually("the agent bootstraps", func() (err error) {
		first, err = w.clientSerial(ns, "cluster-1")
		return err
	})
	w.eventually("the agent connects", func() error { return w.connected("cluster-1") })
	issuedAt := time.Now()
	opened := w.metric(`relay_streams_opened_total{cluster="cluster-1",stream="push"}`)

	deadline := time.Now().Add(75 * time.Second)
	for {
		if m := w.metric(`relay_certificates_issued_total{call="renew"}`); strings.HasSuffix(m, " 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scheduled renewal within 75s of a one-minute certificate")
		}
		time.Sleep(500 * time.Millisecond)
	}
	if took := time.Since(issuedAt); took < 20*time.Second {
		t.Errorf("renewed after %s, before the grace period (about 33s) started", took.Round(time.Second))
	}
	w.eventually("the secret holds the renewed certificate", func() error {
		s, err := w.clientSerial(ns, "cluster-1")
		if err == nil && s == first {
			err = fmt.Errorf("still the first certificate")
		}
		return err
	})
	if again := w.metric(`relay_streams_opened_total{cluster="cluster-1",stream="push"}`); again != opened {
		t.Errorf("the push stream was reopened by the rotation: %q then %q", opened, again)
	}
}
