package webhook

import (
	"context"
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
// passes the secret's own check: the names and usages of its role, DNS-1123
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
		requireUsage(p, crt, cmapi.UsageClientAuth)
	case relaysecret.Server:
		if !slices.ContainsFunc(crt.Spec.DNSNames, func(n string) bool { return pki.NameCovers(n, s.cfg.Authority) }) {
			p.deny(spec.Child("dnsNames"), "%v do not cover the authority %q that agents dial: add it", crt.Spec.DNSNames, s.cfg.Authority)
		}
		requireUsage(p, crt, cmapi.UsageServerAuth)
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

// requireUsage denies crt unless its usages hold u; cert-manager's default
// usages (digital signature, key encipherment) hold neither client nor
// server auth.
func requireUsage(p *problems, crt *cmapi.Certificate, u cmapi.KeyUsage) {
	if !slices.Contains(crt.Spec.Usages, u) {
		p.deny(field.NewPath("spec", "usages"), "%s must include %q for %s: add it (with %q and %q)", fmt.Sprint(crt.Spec.Usages), u,
			crt.Spec.SecretName, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment)
	}
}
