package webhook

import (
	"context"
	"fmt"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// Validator runs the admission checks outside an admission request, for
// relayctl validate: the same checks the typed validators run, with the
// other secrets read through any client.Reader (an in-memory one over the
// manifests being checked, for example). Its denials are the "path: detail"
// parts of a validator's denial, its warnings the validator's warnings.
//
// Every object is checked as a create: the check an update of a CA runs
// (that it does not orphan the certificates already stored) needs the
// stored object, which offline input does not have.
type Validator struct {
	s *secrets
}

// NewValidator returns a Validator with cfg's settings (namespace, secret
// names, cluster, authority, rotation ratio) that reads other secrets
// through reader and checks validity at clk's time. cfg is not copied.
func NewValidator(cfg *config.Webhook, reader client.Reader, clk clock.PassiveClock) *Validator {
	return &Validator{s: &secrets{cfg: cfg, reader: reader, now: clk.Now}}
}

// Secret checks sec as the webhook checks its creation. Each denial is one
// "path: detail" line of the webhook's denial message; err is a failure to
// read the secrets the checks need, not a denial.
func (v *Validator) Secret(ctx context.Context, sec *corev1.Secret) (denials, warnings []string, err error) {
	p, err := v.s.validate(ctx, sec, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to check secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return p.lines(), p.warnings, nil
}

// Certificate checks a cert-manager Certificate as the webhook does.
func (v *Validator) Certificate(crt *cmapi.Certificate) (denials, warnings []string, err error) {
	p := v.s.validateCertificate(crt)
	return p.lines(), p.warnings, nil
}

// Cluster checks a KubernetesCluster as the webhook does.
func (v *Validator) Cluster(kc *meshv1alpha1.KubernetesCluster) (denials, warnings []string, err error) {
	p := validateCluster(kc)
	return p.lines(), p.warnings, nil
}

// Object checks obj with the check of its kind: a Secret, a cert-manager
// Certificate or a KubernetesCluster; any other kind is an error.
func (v *Validator) Object(ctx context.Context, obj client.Object) (denials, warnings []string, err error) {
	switch o := obj.(type) {
	case *corev1.Secret:
		return v.Secret(ctx, o)
	case *cmapi.Certificate:
		return v.Certificate(o)
	case *meshv1alpha1.KubernetesCluster:
		return v.Cluster(o)
	}
	return nil, nil, fmt.Errorf("the webhook has no check for %T", obj)
}

// Checks reports whether the webhook looks at obj at all: a relay secret or
// Istio's cacerts, a Certificate that writes a relay certificate secret, or
// a KubernetesCluster. Anything else it admits unseen, so an "allowed" for
// it says nothing; the usual cause is a namespace or secret name that
// differs from the settings.
func (v *Validator) Checks(obj client.Object) bool {
	switch o := obj.(type) {
	case *corev1.Secret:
		_, ok := v.s.kindOf(client.ObjectKeyFromObject(o))
		return ok
	case *cmapi.Certificate:
		_, ok := v.s.certificateKind(o)
		return ok
	case *meshv1alpha1.KubernetesCluster:
		return true
	}
	return false
}

// lines returns each denial as the "path: detail" part of message.
func (p *problems) lines() []string {
	if len(p.errs) == 0 {
		return nil
	}
	out := make([]string, 0, len(p.errs))
	for _, e := range p.errs {
		out = append(out, fmt.Sprintf("%s: %s", e.Field, e.Detail))
	}
	return out
}
