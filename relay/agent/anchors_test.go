package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// TestAnchorsAreTheLocalRootsAndTheServersBundle: a root the server's
// bundle adds is trusted at once; a root leaves the anchors only once
// both the local roots and the server's bundle dropped it; the expiry
// metric shows exactly the anchors.
func TestAnchorsAreTheLocalRootsAndTheServersBundle(t *testing.T) {
	a, b := newTestRoot(t, "a"), newTestRoot(t, "b")
	m := newAgentMetrics()
	r := &rootSet{changed: m.setRoots}
	certs := func(cs ...*pki.Certified) []*x509.Certificate {
		var out []*x509.Certificate
		for _, c := range cs {
			out = append(out, c.Cert)
		}
		return out
	}
	for _, step := range []struct {
		name        string
		do          func() bool
		wantChanged bool
		want        []*pki.Certified
	}{
		{"the local roots", func() bool { return r.setLocal(certs(a)) }, true, []*pki.Certified{a}},
		{"the server pushes a and b: b joins at once", func() bool { return r.setPushed(certs(a, b)) }, true, []*pki.Certified{a, b}},
		{"the folder catches up: nothing changes", func() bool { return r.setLocal(certs(b, a)) }, false, []*pki.Certified{a, b}},
		{"the server retires a: the folder still has it", func() bool { return r.setPushed(certs(b)) }, false, []*pki.Certified{a, b}},
		{"the folder drops a too: it leaves", func() bool { return r.setLocal(certs(b)) }, true, []*pki.Certified{b}},
	} {
		if changed := step.do(); changed != step.wantChanged {
			t.Errorf("%s: changed %v, want %v", step.name, changed, step.wantChanged)
		}
		if got := r.Get(); !slices.EqualFunc(got, certs(step.want...), (*x509.Certificate).Equal) {
			t.Errorf("%s: %d anchors, want %d", step.name, len(got), len(step.want))
		}
	}
	want := map[string]float64{pki.Fingerprint(b.Cert): float64(b.Cert.NotAfter.Unix())}
	if got := rootExpirySeries(t, m); !maps.Equal(got, want) {
		t.Errorf("root expiry series %v, want only b's %v", got, want)
	}
}

// TestANewRootCountsFromTheNextHandshakeAndOpenConnectionsStay dials, as
// relay-agent does, a server whose certificate a root outside the
// anchors issued: refused; once that root joins the anchors, a new
// handshake of the same connection verifies, without a new dial; once it
// leaves again, the open connection keeps working.
func TestANewRootCountsFromTheNextHandshakeAndOpenConnectionsStay(t *testing.T) {
	old, next := newTestRoot(t, "old"), newTestRoot(t, "next")
	addr, _ := recordingStubRelay(t, serverOf(t, next))
	cfg := config.DefaultAgent()
	cfg.Cluster, cfg.ServerAddress = "cluster-1", addr
	roots := &rootSet{}
	roots.setLocal([]*x509.Certificate{old.Cert})
	conn, err := dial(&cfg, roots.Get, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	renew := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := relayv1.NewRelayClient(conn).Renew(ctx, &relayv1.RenewRequest{})
		return err
	}
	if err := renew(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "does not verify to the relay roots") {
		t.Fatalf("Renew with the old root alone: %v, want the handshake refused", err)
	}
	roots.setPushed([]*x509.Certificate{next.Cert})
	testenv.Eventually(t, "a handshake with the new root passes", 20*time.Second, func() error {
		if err := renew(); status.Code(err) != codes.Unimplemented {
			return fmt.Errorf("Renew: %v", err)
		}
		return nil
	})
	roots.setPushed(nil)
	if err := renew(); status.Code(err) != codes.Unimplemented {
		t.Errorf("Renew on the open connection after the root left the anchors: %v, want it to pass (Unimplemented from the stub)", err)
	}
}

// rootExpirySeries returns the root expiry metric's values by fingerprint.
func rootExpirySeries(t *testing.T, m *agentMetrics) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	m.rootExpiry.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for metric := range ch {
		var d dto.Metric
		if err := metric.Write(&d); err != nil {
			t.Fatal(err)
		}
		out[d.GetLabel()[0].GetValue()] = d.GetGauge().GetValue()
	}
	return out
}
