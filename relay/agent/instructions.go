package agent

import (
	"context"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/version"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// handle acts on one instruction from the server.
func (s *streams) handle(ctx context.Context, in *relayv1.Instruction) {
	o := &s.opts
	switch {
	case in.GetTrustBundle() != nil:
		roots, err := pki.DecodeCertificates(in.GetTrustBundle().GetCaCertificates())
		if err != nil {
			o.Log.Error(err, "ignored a bad trust bundle from the server")
			return
		}
		o.Roots.Set(roots)
	case in.GetRenewNow() != nil:
		select {
		case o.RenewNow <- in.GetRenewNow().GetReason():
		default:
		}
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

// status is the agent's status message for the push stream.
func (s *streams) status() *relayv1.PushMessage {
	st := &relayv1.AgentStatus{AgentVersion: version.Version, Replica: s.opts.Replica}
	if cert := s.opts.Provider.Current(); cert != nil {
		st.ClientCertificateNotAfter = cert.Leaf.NotAfter.Unix()
	}
	if s.opts.IstioCA != nil {
		st.IstioCa = s.opts.IstioCA.status()
	}
	return &relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: st}}
}
