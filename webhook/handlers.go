package webhook

import (
	"context"
	"fmt"
	"net/http"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// Paths the admission webhooks are served on; the manifests' webhook
// configurations name them.
const (
	SecretsPath      = "/validate-relay-secrets"
	CertificatesPath = "/validate-certificates"
	ClustersPath     = "/validate-kubernetesclusters"
	InjectPath       = "/inject-agent"
)

// secretHandler admits relay secrets and Istio's cacerts.
type secretHandler struct {
	s       *secrets
	decoder admission.Decoder
}

var _ admission.Handler = &secretHandler{}

func (h *secretHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation == admissionv1.Delete {
		return admission.Allowed("")
	}
	var sec corev1.Secret
	if err := h.decoder.Decode(req, &sec); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("failed to decode the Secret: %w", err))
	}
	if sec.Namespace == "" {
		sec.Namespace = req.Namespace
	}
	var old *corev1.Secret
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		old = &corev1.Secret{}
		if err := h.decoder.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("failed to decode the stored Secret: %w", err))
		}
	}
	p, err := h.s.validate(ctx, &sec, old)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return respond(p, "secret "+sec.Namespace+"/"+sec.Name)
}

// certificateHandler admits cert-manager Certificates.
type certificateHandler struct {
	s       *secrets
	decoder admission.Decoder
}

var _ admission.Handler = &certificateHandler{}

func (h *certificateHandler) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation == admissionv1.Delete {
		return admission.Allowed("")
	}
	var crt cmapi.Certificate
	if err := h.decoder.Decode(req, &crt); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("failed to decode the Certificate: %w", err))
	}
	if crt.Namespace == "" {
		crt.Namespace = req.Namespace
	}
	return respond(h.s.validateCertificate(&crt), "Certificate "+crt.Namespace+"/"+crt.Name)
}

// clusterHandler admits KubernetesClusters.
type clusterHandler struct {
	decoder admission.Decoder
}

var _ admission.Handler = &clusterHandler{}

func (h *clusterHandler) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation == admissionv1.Delete {
		return admission.Allowed("")
	}
	var kc meshv1alpha1.KubernetesCluster
	if err := h.decoder.Decode(req, &kc); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("failed to decode the KubernetesCluster: %w", err))
	}
	return respond(validateCluster(&kc), "KubernetesCluster "+kc.Name)
}

// respond denies with every problem on one line, or allows; warnings go
// back either way.
func respond(p *problems, subject string) admission.Response {
	if len(p.errs) > 0 {
		return admission.Denied(p.message(subject)).WithWarnings(p.warnings...)
	}
	return admission.Allowed("").WithWarnings(p.warnings...)
}
