package backup

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func TestMarshalKeepsOnlyWhatARestoreNeeds(t *testing.T) {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: "relay-root-tls-secret", Namespace: "gloo-mesh",
			Labels: map[string]string{"app": "relay"},
			Annotations: map[string]string{
				"note":      "kept",
				lastApplied: `{"data":{"tls.key":"c2VjcmV0"}}`,
			},
			ResourceVersion:   "42",
			UID:               "8c6f1e5e-0000-4000-8000-000000000001",
			CreationTimestamp: metav1.Now(),
			Generation:        3,
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "relay-server"}},
			OwnerReferences:   []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: "u"}},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("crt"), "tls.key": []byte("key")},
	}
	doc, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata": map[string]any{
			"name": "relay-root-tls-secret", "namespace": "gloo-mesh",
			"labels":      map[string]any{"app": "relay"},
			"annotations": map[string]any{"note": "kept"},
		},
		"type": "kubernetes.io/tls",
		"data": map[string]any{"tls.crt": "Y3J0", "tls.key": "a2V5"},
	}
	if a, b := mustJSON(t, got), mustJSON(t, want); a != b {
		t.Errorf("manifest:\n%s\nwant:\n%s", a, b)
	}
	if s.Annotations[lastApplied] == "" || s.ResourceVersion != "42" {
		t.Error("Marshal changed the secret it was given")
	}
}

func TestCleanDefaultsTheTypeAndDropsAnEmptyAnnotationMap(t *testing.T) {
	s := Clean(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "t", Annotations: map[string]string{lastApplied: "{}"}}})
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %q, want Opaque", s.Type)
	}
	if s.Annotations != nil {
		t.Errorf("annotations = %v, want none", s.Annotations)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
