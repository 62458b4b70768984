package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MinClientCertificateTTL is the shortest client certificate lifetime the
// server accepts; shorter ones would rotate faster than agents can renew.
const MinClientCertificateTTL = time.Minute

// Validate returns every problem in s, each naming its setting and the fix.
func (s *Server) Validate() error {
	var errs field.ErrorList
	errs = append(errs, label(field.NewPath("namespace"), s.Namespace)...)
	for _, ref := range []struct {
		path string
		ref  SecretRef
	}{{"signingTlsSecret", s.SigningTLSSecret}, {"tlsSecret", s.TLSSecret}, {"rootTlsSecret", s.RootTLSSecret}} {
		errs = append(errs, secretRef(field.NewPath(ref.path), ref.ref)...)
	}
	errs = append(errs, tokenRef(field.NewPath("tokenSecret"), s.TokenSecret)...)
	errs = append(errs, subdomain(field.NewPath("authority"), s.Authority)...)
	errs = append(errs, address(field.NewPath("listenAddress"), s.ListenAddress)...)
	errs = append(errs, address(field.NewPath("metricsAddress"), s.MetricsAddress)...)
	if ttl := s.ClientCertificateTTL.Duration; ttl < MinClientCertificateTTL {
		errs = append(errs, field.Invalid(field.NewPath("clientCertificateTTL"), ttl.String(),
			fmt.Sprintf("must be at least %s, for example 8760h for one year", MinClientCertificateTTL)))
	}
	errs = append(errs, s.validateRotation()...)
	if s.MaxConcurrentSigning < 1 {
		errs = append(errs, field.Invalid(field.NewPath("maxConcurrentSigning"), s.MaxConcurrentSigning, "must be at least 1"))
	}
	if s.PeerSigningRate <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("peerSigningRate"), s.PeerSigningRate, "must be more than 0 calls per second"))
	}
	if s.PeerSigningBurst < 1 {
		errs = append(errs, field.Invalid(field.NewPath("peerSigningBurst"), s.PeerSigningBurst, "must be at least 1"))
	}
	if s.ClientIssuerSecret != "" {
		errs = append(errs, subdomain(field.NewPath("clientIssuerSecret"), s.ClientIssuerSecret)...)
	}
	if s.ReplicaName != "" {
		errs = append(errs, subdomain(field.NewPath("replicaName"), s.ReplicaName)...)
		if len(s.ReplicaName) > MaxReplicaName {
			errs = append(errs, field.TooLong(field.NewPath("replicaName"), s.ReplicaName, MaxReplicaName))
		}
	}
	for _, r := range []struct {
		path  string
		rate  float64
		burst int
	}{{"clusterRenew", s.ClusterRenewRate, s.ClusterRenewBurst}, {"clusterPush", s.ClusterPushRate, s.ClusterPushBurst}} {
		if r.rate <= 0 {
			errs = append(errs, field.Invalid(field.NewPath(r.path+"Rate"), r.rate, "must be more than 0 per second"))
		}
		if r.burst < 1 {
			errs = append(errs, field.Invalid(field.NewPath(r.path+"Burst"), r.burst, "must be at least 1"))
		}
	}
	if s.MaxStreamsPerCluster < 2 {
		errs = append(errs, field.Invalid(field.NewPath("maxStreamsPerCluster"), s.MaxStreamsPerCluster, "must be at least 2: one push and one pull stream"))
	}
	return errs.ToAggregate()
}

// Validate returns every problem in a, each naming its setting and the fix.
func (a *Agent) Validate() error {
	var errs field.ErrorList
	if a.Cluster == "" {
		errs = append(errs, field.Required(field.NewPath("cluster"), "set it to this workload cluster's registered name (--cluster)"))
	} else {
		errs = append(errs, label(field.NewPath("cluster"), a.Cluster)...)
	}
	errs = append(errs, label(field.NewPath("namespace"), a.Namespace)...)
	if a.ServerAddress == "" {
		errs = append(errs, field.Required(field.NewPath("serverAddress"), "set it to relay-server's host:port, for example gloo-mesh-mgmt-server.gloo-mesh:9900 (--server-address)"))
	} else if _, port, err := net.SplitHostPort(a.ServerAddress); err != nil || !validPort(port) {
		errs = append(errs, field.Invalid(field.NewPath("serverAddress"), a.ServerAddress, "must be host:port, for example gloo-mesh-mgmt-server.gloo-mesh:9900"))
	}
	errs = append(errs, subdomain(field.NewPath("authority"), a.Authority)...)
	errs = append(errs, secretRef(field.NewPath("clientTlsSecret"), a.ClientTLSSecret)...)
	errs = append(errs, secretRef(field.NewPath("rootTlsSecret"), a.RootTLSSecret)...)
	errs = append(errs, secretRef(field.NewPath("istioCaSecret"), a.IstioCASecret)...)
	errs = append(errs, tokenRef(field.NewPath("tokenSecret"), a.TokenSecret)...)
	if r := a.ClientTLSSecretRotationGracePeriodRatio; !(r > 0 && r < 1) {
		errs = append(errs, field.Invalid(field.NewPath("clientTlsSecretRotationGracePeriodRatio"), r,
			"must be between 0 and 1, for example 0.1 renews when a tenth of the lifetime is left"))
	}
	errs = append(errs, address(field.NewPath("metricsAddress"), a.MetricsAddress)...)
	return errs.ToAggregate()
}

func label(p *field.Path, v string) field.ErrorList {
	if msgs := validation.IsDNS1123Label(v); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(p, v, dnsHint(v, msgs))}
	}
	return nil
}

func subdomain(p *field.Path, v string) field.ErrorList {
	if msgs := validation.IsDNS1123Subdomain(v); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(p, v, dnsHint(v, msgs))}
	}
	return nil
}

// dnsHint names an underscore explicitly: it is the usual mistake, and TLS
// libraries reject certificates for such names (a context name with an
// underscore, used as the cluster name, is the common case).
func dnsHint(v string, msgs []string) string {
	if strings.Contains(v, "_") {
		return fmt.Sprintf("contains an underscore, which DNS-1123 names do not allow: use %q", strings.ReplaceAll(v, "_", "-"))
	}
	return strings.Join(msgs, "; ")
}

func secretRef(p *field.Path, r SecretRef) field.ErrorList {
	errs := subdomain(p.Child("name"), r.Name)
	if r.Namespace != "" {
		errs = append(errs, label(p.Child("namespace"), r.Namespace)...)
	}
	return errs
}

func tokenRef(p *field.Path, r TokenSecretRef) field.ErrorList {
	errs := secretRef(p, r.SecretRef)
	if msgs := validation.IsConfigMapKey(r.Key); len(msgs) > 0 {
		errs = append(errs, field.Invalid(p.Child("key"), r.Key, strings.Join(msgs, "; ")))
	}
	return errs
}

func address(p *field.Path, v string) field.ErrorList {
	if _, port, err := net.SplitHostPort(v); err != nil || !validPort(port) {
		return field.ErrorList{field.Invalid(p, v, "must be [host]:port, for example :9091")}
	}
	return nil
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535
}

// MinGeneratedCertificateTTL is the shortest lifetime of a certificate
// relay-server generates: shorter ones would expire before a rotation
// could finish.
const MinGeneratedCertificateTTL = 2 * time.Minute

// validateRotation checks the lifetimes and renewal points of the
// certificates relay-server generates.
func (s *Server) validateRotation() field.ErrorList {
	var errs field.ErrorList
	for _, t := range []struct {
		path  string
		ttl   time.Duration
		ratio float64
		rpath string
	}{
		{"rootCertificateTTL", s.RootCertificateTTL.Duration, s.RootRenewalRatio, "rootRenewalRatio"},
		{"signingCertificateTTL", s.SigningCertificateTTL.Duration, s.SigningRenewalRatio, "signingRenewalRatio"},
		{"serverCertificateTTL", s.ServerCertificateTTL.Duration, s.ServerRenewalRatio, "serverRenewalRatio"},
	} {
		if t.ttl < MinGeneratedCertificateTTL {
			errs = append(errs, field.Invalid(field.NewPath(t.path), t.ttl.String(),
				fmt.Sprintf("must be at least %s", MinGeneratedCertificateTTL)))
		}
		if t.ratio <= 0 || t.ratio >= 1 {
			errs = append(errs, field.Invalid(field.NewPath(t.rpath), t.ratio,
				"must be between 0 and 1, the fraction of the lifetime left at renewal, for example 0.35"))
		}
	}
	if s.SigningCertificateTTL.Duration > s.RootCertificateTTL.Duration || s.ServerCertificateTTL.Duration > s.RootCertificateTTL.Duration {
		errs = append(errs, field.Invalid(field.NewPath("rootCertificateTTL"), s.RootCertificateTTL.Duration.String(),
			"must be at least signingCertificateTTL and serverCertificateTTL: a certificate cannot outlive the root it chains to"))
	}
	if s.RootRotationOverlap.Duration < 0 {
		errs = append(errs, field.Invalid(field.NewPath("rootRotationOverlap"), s.RootRotationOverlap.Duration.String(), "must not be negative"))
	}
	if s.RenewalBudget <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("renewalBudget"), s.RenewalBudget, "must be more than 0 renewals per second"))
	}
	return errs
}
