package webhook

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

func TestKubernetesClusterHandler(t *testing.T) {
	h := handlersForFuzzing(t)[ClustersPath]
	for _, tc := range []struct {
		name, object string
		allowed      bool
		want         string
	}{
		{"a DNS-1123 label is admitted", `{"apiVersion":"meshrelay.dev/v1alpha1","kind":"KubernetesCluster","metadata":{"name":"cluster-1"}}`, true, ""},
		{"a name with a dot is denied", `{"apiVersion":"meshrelay.dev/v1alpha1","kind":"KubernetesCluster","metadata":{"name":"cluster.one"}}`, false,
			`KubernetesCluster cluster.one: metadata.name: name "cluster.one"`},
		{"a name with an underscore is denied as such", `{"apiVersion":"meshrelay.dev/v1alpha1","kind":"KubernetesCluster","metadata":{"name":"cluster_one"}}`, false,
			`contains an underscore`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(tc.object)},
			}})
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v (%v)", resp.Allowed, tc.allowed, resp.Result)
			}
			if !tc.allowed && !strings.Contains(resp.Result.Message, tc.want) {
				t.Errorf("message %q does not contain %q", resp.Result.Message, tc.want)
			}
		})
	}
}
