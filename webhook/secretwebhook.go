package webhook

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// secretValidator admits relay secrets and Istio's cacerts with the checks
// of secrets.
type secretValidator struct {
	s *secrets
}

var _ admission.Validator[*corev1.Secret] = &secretValidator{}

// SetupWebhookWithManager serves v on SecretsPath, through secretReviews,
// which decodes a review and its Secrets in one pass.
func (v *secretValidator) SetupWebhookWithManager(mgr ctrl.Manager) error {
	mgr.GetWebhookServer().Register(SecretsPath, &secretReviews{v: v})
	return nil
}

// ValidateCreate checks a new secret.
func (v *secretValidator) ValidateCreate(ctx context.Context, sec *corev1.Secret) (admission.Warnings, error) {
	return v.validate(ctx, sec, nil)
}

// ValidateUpdate checks sec against the stored old: an update of a CA must
// not orphan the certificates it signed.
func (v *secretValidator) ValidateUpdate(ctx context.Context, old, sec *corev1.Secret) (admission.Warnings, error) {
	return v.validate(ctx, sec, old)
}

// ValidateDelete allows every delete but one: on the management cluster,
// deleting relay-root-tls-secret while a root in it still anchors a live
// client certificate of the fleet (see checkRootsKept).
func (v *secretValidator) ValidateDelete(ctx context.Context, old *corev1.Secret) (admission.Warnings, error) {
	inRequestNamespace(ctx, old)
	p, err := v.s.validateDelete(ctx, old)
	if err != nil {
		return nil, internalError(err)
	}
	return verdict(p, "secret "+old.Namespace+"/"+old.Name)
}

// validate checks sec; old is the stored secret on update, nil on create.
// A failure to read the secrets the checks need is an internal error, not
// a denial.
func (v *secretValidator) validate(ctx context.Context, sec, old *corev1.Secret) (admission.Warnings, error) {
	inRequestNamespace(ctx, sec)
	p, err := v.s.validate(ctx, sec, old)
	if err != nil {
		return nil, internalError(err)
	}
	return verdict(p, "secret "+sec.Namespace+"/"+sec.Name)
}
