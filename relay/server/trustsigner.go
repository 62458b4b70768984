package server

import (
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// signIntermediate checks csrPEM, the CSR cluster's agent sent for its
// Istio intermediate, and signs it at now under p's root with p's TTL. It
// returns the certificate and the instruction that carries it to the
// agent, with the replaced roots root-cert.pem keeps during an overlap.
// Its errors say what is wrong with the request; it does no I/O.
func signIntermediate(p *trustPolicy, cluster string, csrPEM []byte, now time.Time) (*pki.Issued, *relayv1.Instruction, error) {
	if len(csrPEM) > maxCSRBytes {
		return nil, nil, fmt.Errorf("CSR too large: at most %d bytes", maxCSRBytes)
	}
	csr, err := pki.DecodeCSR(csrPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	issued, err := p.signer.SignIstioIntermediate(csr, cluster, p.ttl, now)
	if err != nil {
		return nil, nil, err
	}
	in := &relayv1.Instruction{Instruction: &relayv1.Instruction_IntermediateIssued{IntermediateIssued: &relayv1.IntermediateIssued{
		Policy: p.name, CertificateChain: issued.CertPEM, RootCertificate: p.rootPEM, AutoRestartPods: p.autoRestart,
		PreviousRootSha256: p.previous,
	}}}
	return issued, in, nil
}
