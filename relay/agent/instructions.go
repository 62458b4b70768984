package agent

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/meshrelay/meshrelay/pkg/version"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// maxReasonBytes bounds a reason from the server that the agent logs.
const maxReasonBytes = 1024

// connection is what the agent knows of the connection an instruction
// came on.
type connection struct {
	// server is the chain the relay server presented, its certificate
	// first; empty in insecure mode.
	server []*x509.Certificate
}

// handle acts on one instruction from the server, which came on conn.
func (s *streams) handle(ctx context.Context, in *relayv1.Instruction, conn connection) {
	o := &s.opts
	switch {
	case in.GetTrustBundle() != nil:
		s.onTrustBundle(in.GetTrustBundle().GetCaCertificates(), conn)
	case in.GetRenewNow() != nil:
		select {
		case o.RenewNow <- in.GetRenewNow().GetReason():
		default:
		}
	case in.GetRenewAt() != nil:
		s.onRenewAt(in.GetRenewAt())
	case in.GetIssueIntermediate() != nil:
		if o.IstioCA == nil {
			o.Log.Info("the server asked for an Istio intermediate, but federated trust is off in this agent: set --federated-trust and apply manifests/components/istio-federated-trust",
				"policy", in.GetIssueIntermediate().GetPolicy())
			return
		}
		o.IstioCA.onIssue(in.GetIssueIntermediate())
	case in.GetIntermediateIssued() != nil:
		if o.IstioCA == nil {
			return
		}
		// Off the receive loop: writing cacerts and restarting pods take
		// API calls.
		go o.IstioCA.onIssued(ctx, in.GetIntermediateIssued())
	}
}

// onTrustBundle takes the roots of a bundle the server pushed as trust
// anchors at once, when the bundle verifies the server it came from, and
// hands it to the writer and the acknowledgement; a bundle that does not
// is refused and changes nothing.
func (s *streams) onTrustBundle(bundle []byte, conn connection) {
	o := &s.opts
	b, err := acceptBundle(bundle, conn.server, o.Config.Authority, s.now())
	if err != nil {
		o.Updates.WithLabelValues("refused").Inc()
		o.Log.Error(err, "refused a trust bundle from the relay server; the trust anchors stay as they were")
		return
	}
	o.Updates.WithLabelValues("accepted").Inc()
	if o.Roots.setPushed(b.roots) {
		o.Log.Info("trust anchors changed: the relay server's trust bundle joined them", "sha256", b.sha, "roots", len(b.roots), "anchors", len(o.Roots.Get()))
	}
	if o.Bundles != nil {
		o.Bundles.offer(b)
	}
}

// onRenewAt records the renewal time the server set, for the rotator.
func (s *streams) onRenewAt(in *relayv1.RenewAt) {
	o := &s.opts
	at, reason := time.Unix(in.GetAt(), 0), in.GetReason()
	if len(reason) > maxReasonBytes {
		reason = reason[:maxReasonBytes]
	}
	serial := ""
	if o.Provider != nil {
		if cert := o.Provider.Current(); cert != nil {
			serial = cert.Leaf.SerialNumber.String()
		}
	}
	o.Log.V(1).Info("the relay server set a time to renew the client certificate", "at", at.UTC(), "reason", reason)
	if o.RenewAt != nil {
		o.RenewAt.request(at, reason, serial)
	}
}

// now is the time by the streams' clock.
func (s *streams) now() time.Time {
	if s.opts.Clock == nil {
		return time.Now()
	}
	return s.opts.Clock.Now()
}

// status is the agent's status message for the Connect or push stream.
func (s *streams) status() *relayv1.PushMessage {
	st := &relayv1.AgentStatus{AgentVersion: version.Version, Replica: s.opts.Replica}
	if cert := s.opts.Provider.Current(); cert != nil {
		st.ClientCertificateNotAfter = cert.Leaf.NotAfter.Unix()
	}
	if s.opts.IstioCA != nil {
		st.IstioCa = s.opts.IstioCA.status()
	}
	if s.opts.Bundles != nil {
		st.TrustBundleSha256 = s.opts.Bundles.acknowledged()
	}
	return &relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: st}}
}
