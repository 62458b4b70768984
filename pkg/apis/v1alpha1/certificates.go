package v1alpha1

import (
	"slices"
	"time"
)

// LiveClientCertificates returns the cluster's client certificates that
// have neither expired at now nor been revoked (spec.revocation): its
// newest (status.clientCertificate), and the one in use on each replica
// that holds streams of the cluster (its entry's streamCertificate, or its
// clientCertificate when that is the one), which is older than the newest
// when the agent could not store a certificate issued to it. A root or a
// signing CA is in use by the cluster while any of them chains to it.
func (kc *KubernetesCluster) LiveClientCertificates(now time.Time) []*CertificateSummary {
	var out []*CertificateSummary
	add := func(c *CertificateSummary) {
		if c == nil || !c.NotAfter.After(now) || kc.Spec.Revocation.Refuses(c) {
			return
		}
		for _, o := range out {
			if o.Serial == c.Serial && o.IssuerSHA256 == c.IssuerSHA256 && o.RootSHA256 == c.RootSHA256 {
				return
			}
		}
		out = append(out, c)
	}
	add(kc.Status.ClientCertificate)
	for i := range kc.Status.Replicas {
		r := &kc.Status.Replicas[i]
		switch {
		case r.StreamCertificate != nil:
			add(r.StreamCertificate)
		case r.PushStreams > 0 || r.PullStreams > 0:
			add(r.ClientCertificate)
		}
	}
	return out
}

// Refuses reports whether the revocation refuses the certificate c
// describes: by its serial, or issued before IssuedBefore (its IssuedAt
// when recorded, else its NotBefore). A nil revocation refuses nothing.
func (r *Revocation) Refuses(c *CertificateSummary) bool {
	if r == nil {
		return false
	}
	if slices.Contains(r.Serials, c.Serial) {
		return true
	}
	issued := c.NotBefore.Time
	if c.IssuedAt != nil {
		issued = c.IssuedAt.Time
	}
	return r.IssuedBefore != nil && issued.Before(r.IssuedBefore.Time)
}
