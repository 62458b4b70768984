package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/webhook/injector"
)

// InjectLabel selects the pods the injector changes: the manifests'
// MutatingWebhookConfiguration sends only pods carrying it.
const (
	InjectLabel      = "meshrelay.dev/inject"
	InjectLabelValue = "relay-agent"
)

// podHandler injects the relay secrets' volumes, mounts and the agent's
// settings into agent pods.
type podHandler struct {
	settings injector.Settings
	// problem, when set, is why this webhook cannot inject: agent pods are
	// refused with it, since an agent without its settings cannot start.
	problem string
	decoder admission.Decoder
}

var _ admission.Handler = &podHandler{}

func newPodHandler(cfg *config.Webhook, decoder admission.Decoder) *podHandler {
	h := &podHandler{decoder: decoder, settings: injector.Settings{
		Cluster:         cfg.Cluster,
		ServerAddress:   cfg.ServerAddress,
		Authority:       cfg.Authority,
		ClientTLSSecret: cfg.ClientTLSSecret.Name,
		RootTLSSecret:   cfg.RootTLSSecret.Name,
		TokenSecret:     cfg.TokenSecret.Name,
		Container:       cfg.AgentContainer,
	}}
	if err := h.settings.Validate(); err != nil {
		h.problem = fmt.Sprintf("relay-webhook cannot inject agent pods: %v: set --cluster and --server-address on the webhook of this workload cluster", err)
	}
	return h
}

func (h *podHandler) Handle(_ context.Context, req admission.Request) admission.Response {
	var pod corev1.Pod
	if err := h.decoder.Decode(req, &pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("failed to decode the Pod: %w", err))
	}
	if h.problem != "" {
		return admission.Denied(h.problem)
	}
	if !injector.Pod(&pod, h.settings) {
		return admission.Allowed("already injected")
	}
	mutated, err := json.Marshal(&pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("failed to encode the injected Pod: %w", err))
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, mutated)
}
