package webhook

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// certificateValidator admits cert-manager Certificates: one that writes a
// relay certificate secret must ask for what that secret's check requires.
type certificateValidator struct {
	s *secrets
}

var _ admission.Validator[*cmapi.Certificate] = &certificateValidator{}

// SetupWebhookWithManager serves v on CertificatesPath.
func (v *certificateValidator) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &cmapi.Certificate{}).
		WithValidator(v).
		WithValidatorCustomPath(CertificatesPath).
		Complete()
}

// ValidateCreate checks a new Certificate.
func (v *certificateValidator) ValidateCreate(ctx context.Context, crt *cmapi.Certificate) (admission.Warnings, error) {
	return v.validate(ctx, crt)
}

// ValidateUpdate checks the Certificate as updated; the stored one does not
// matter.
func (v *certificateValidator) ValidateUpdate(ctx context.Context, _, crt *cmapi.Certificate) (admission.Warnings, error) {
	return v.validate(ctx, crt)
}

// ValidateDelete allows every delete.
func (v *certificateValidator) ValidateDelete(context.Context, *cmapi.Certificate) (admission.Warnings, error) {
	return nil, nil
}

// validate checks crt, in the request's namespace when it names none.
func (v *certificateValidator) validate(ctx context.Context, crt *cmapi.Certificate) (admission.Warnings, error) {
	inRequestNamespace(ctx, crt)
	return verdict(v.s.validateCertificate(crt), "Certificate "+crt.Namespace+"/"+crt.Name)
}

// certificateKind returns the kind of the secret crt writes, and whether
// that is a relay certificate secret, which is all the webhook checks.
func (s *secrets) certificateKind(crt *cmapi.Certificate) (relaysecret.Kind, bool) {
	kind, ok := s.kindOf(types.NamespacedName{Namespace: crt.Namespace, Name: crt.Spec.SecretName})
	if kind == relaysecret.Token || kind == relaysecret.IstioCA {
		return kind, false
	}
	return kind, ok
}

// validateCertificate checks a cert-manager Certificate whose
// spec.secretName is a relay secret, so that what cert-manager will write
// passes the secret's own check: the names of its role and usages its peer
// accepts (none is admitted with a warning), DNS-1123
// names, a CA for the root and signing secrets, and renewBefore shorter
// than duration. A Certificate for any other secret is not the relay's.
func (s *secrets) validateCertificate(crt *cmapi.Certificate) *problems {
	p := &problems{}
	spec := field.NewPath("spec")
	role, ok := s.certificateKind(crt)
	if !ok {
		return p
	}
	for i, n := range crt.Spec.DNSNames {
		if err := role.CheckDNSName(n); err != nil {
			p.denyErr(spec.Child("dnsNames").Index(i), err)
		}
	}
	switch role {
	case relaysecret.Client:
		want := s.cfg.Cluster
		if want != "" && !slices.Contains(crt.Spec.DNSNames, want) {
			p.deny(spec.Child("dnsNames"), "%v does not hold this cluster's name %q: the relay server takes the cluster from the client certificate's DNS name, add %q", crt.Spec.DNSNames, want, want)
		}
		if len(crt.Spec.DNSNames) > 1 {
			p.deny(spec.Child("dnsNames"), "%v: a relay client certificate carries exactly one DNS name, the cluster name", crt.Spec.DNSNames)
		}
		checkUsages(p, crt, role)
	case relaysecret.Server:
		if !slices.ContainsFunc(crt.Spec.DNSNames, func(n string) bool { return pki.NameCovers(n, s.cfg.Authority) }) {
			p.deny(spec.Child("dnsNames"), "%v do not cover the authority %q that agents dial: add it", crt.Spec.DNSNames, s.cfg.Authority)
		}
		checkUsages(p, crt, role)
	case relaysecret.Root, relaysecret.Signing:
		if !crt.Spec.IsCA {
			p.deny(spec.Child("isCA"), "must be true: %s holds a CA", crt.Spec.SecretName)
		}
	}
	duration := cmapi.DefaultCertificateDuration
	if crt.Spec.Duration != nil {
		duration = crt.Spec.Duration.Duration
	}
	if rb := crt.Spec.RenewBefore; rb != nil && rb.Duration >= duration {
		p.deny(spec.Child("renewBefore"), "%s is not shorter than the duration %s, so cert-manager would renew without end: make it shorter, for example %s",
			rb.Duration, duration, (duration / 3).Round(time.Hour))
	}
	return p
}

// checkUsages judges the extended key usages cert-manager will put in the
// certificate of crt as the peer's handshake does (relay-server for a
// client certificate, relay-agent for the server's): usages naming none of
// them (cert-manager's default, digital signature and key encipherment)
// are admitted with a warning, since a certificate without extended key
// usages verifies for every usage; usages naming others but not the
// role's are denied.
func checkUsages(p *problems, crt *cmapi.Certificate, kind relaysecret.Kind) {
	want, ok := kind.ExtKeyUsage()
	if !ok {
		return
	}
	path := field.NewPath("spec", "usages")
	need, verifier := cmapi.UsageClientAuth, "relay-server"
	if want == x509.ExtKeyUsageServerAuth {
		need, verifier = cmapi.UsageServerAuth, "relay-agent"
	}
	recommended := fmt.Sprintf("[%s, %s, %s]", need, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment)
	switch kind.JudgeExtKeyUsages(extKeyUsages(crt.Spec.Usages)) {
	case relaysecret.UsageUnrestricted:
		p.warn("Certificate %s/%s: %s asks for no extended key usage, which %s accepts for %s; setting usages: %s is recommended",
			crt.Namespace, crt.Name, usagesOf(crt), verifier, crt.Spec.SecretName, recommended)
	case relaysecret.UsageRefused:
		p.deny(path, "%s does not include %q, and %s refuses a certificate with other extended key usages but not that one: add it, for example usages: %s",
			usagesOf(crt), need, verifier, recommended)
	}
}

// usagesOf renders crt's usages as cert-manager will take them.
func usagesOf(crt *cmapi.Certificate) string {
	if len(crt.Spec.Usages) == 0 {
		return fmt.Sprintf("no usages (cert-manager's default, %s and %s)", cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment)
	}
	return fmt.Sprint(crt.Spec.Usages)
}

// extKeyUsageOf maps cert-manager's usages to the extended key usages
// cert-manager puts in the certificate (its pkg/util/pki ExtKeyUsageType);
// the others are key usages.
var extKeyUsageOf = map[cmapi.KeyUsage]x509.ExtKeyUsage{
	cmapi.UsageAny:             x509.ExtKeyUsageAny,
	cmapi.UsageServerAuth:      x509.ExtKeyUsageServerAuth,
	cmapi.UsageClientAuth:      x509.ExtKeyUsageClientAuth,
	cmapi.UsageCodeSigning:     x509.ExtKeyUsageCodeSigning,
	cmapi.UsageEmailProtection: x509.ExtKeyUsageEmailProtection,
	cmapi.UsageSMIME:           x509.ExtKeyUsageEmailProtection,
	cmapi.UsageIPsecEndSystem:  x509.ExtKeyUsageIPSECEndSystem,
	cmapi.UsageIPsecTunnel:     x509.ExtKeyUsageIPSECTunnel,
	cmapi.UsageIPsecUser:       x509.ExtKeyUsageIPSECUser,
	cmapi.UsageTimestamping:    x509.ExtKeyUsageTimeStamping,
	cmapi.UsageOCSPSigning:     x509.ExtKeyUsageOCSPSigning,
	cmapi.UsageMicrosoftSGC:    x509.ExtKeyUsageMicrosoftServerGatedCrypto,
	cmapi.UsageNetscapeSGC:     x509.ExtKeyUsageNetscapeServerGatedCrypto,
}

// extKeyUsages returns the extended key usages of usages.
func extKeyUsages(usages []cmapi.KeyUsage) []x509.ExtKeyUsage {
	var out []x509.ExtKeyUsage
	for _, u := range usages {
		if eku, ok := extKeyUsageOf[u]; ok {
			out = append(out, eku)
		}
	}
	return out
}
