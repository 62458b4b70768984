package manifest_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/manifest"
	"github.com/meshrelay/meshrelay/internal/scheme"
)

func secret(ns, name string, labels map[string]string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Data:       map[string][]byte{"ca.crt": []byte(name)},
	}
}

func newReader(t *testing.T, objs ...client.Object) *manifest.Reader {
	t.Helper()
	scheme, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	r := manifest.NewReader(scheme)
	for _, o := range objs {
		if err := r.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestReaderGetAnswersAsTheAPIServer(t *testing.T) {
	root := secret("gloo-mesh", "relay-root-tls-secret", nil)
	r := newReader(t, root)
	root.Data["ca.crt"] = []byte("changed after Add")

	var got corev1.Secret
	if err := r.Get(t.Context(), types.NamespacedName{Namespace: "gloo-mesh", Name: "relay-root-tls-secret"}, &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Data["ca.crt"]) != "relay-root-tls-secret" {
		t.Errorf("Get returned %q: Add did not keep a copy", got.Data["ca.crt"])
	}
	got.Data["ca.crt"] = []byte("changed after Get")
	var again corev1.Secret
	again.Labels = map[string]string{"stale": "yes"}
	if err := r.Get(t.Context(), client.ObjectKeyFromObject(&got), &again); err != nil {
		t.Fatal(err)
	}
	if string(again.Data["ca.crt"]) != "relay-root-tls-secret" || again.Labels != nil {
		t.Errorf("second Get = %+v: Get must return a fresh copy, replacing what obj held", again)
	}

	for _, key := range []types.NamespacedName{{Namespace: "gloo-mesh", Name: "missing"}, {Namespace: "other", Name: "relay-root-tls-secret"}} {
		err := r.Get(t.Context(), key, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("Get(%s) = %v, want NotFound", key, err)
		}
	}
	if err := r.Get(t.Context(), client.ObjectKeyFromObject(root), &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("Get of a ConfigMap by a Secret's name = %v, want NotFound", err)
	}

	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Secret")
	if err := r.Get(t.Context(), client.ObjectKeyFromObject(root), u); err != nil || u.GetName() != "relay-root-tls-secret" {
		t.Errorf("Get into unstructured = %v, %v", err, u.Object)
	}
}

func TestReaderAddRefusesADuplicate(t *testing.T) {
	r := newReader(t, secret("gloo-mesh", "a", nil))
	if err := r.Add(secret("gloo-mesh", "a", nil)); !apierrors.IsAlreadyExists(err) {
		t.Errorf("Add of a duplicate = %v, want AlreadyExists", err)
	}
	if err := r.Add(secret("other", "a", nil)); err != nil {
		t.Errorf("Add of the same name in another namespace = %v", err)
	}
}

func TestReaderListFilters(t *testing.T) {
	r := newReader(t,
		secret("gloo-mesh", "b", map[string]string{"app": "relay"}),
		secret("gloo-mesh", "a", map[string]string{"app": "relay"}),
		secret("gloo-mesh", "c", nil),
		secret("other", "a", map[string]string{"app": "relay"}),
	)
	for _, tc := range []struct {
		name string
		opts []client.ListOption
		want []string
	}{
		{"everything, ordered by namespace and name", nil, []string{"gloo-mesh/a", "gloo-mesh/b", "gloo-mesh/c", "other/a"}},
		{"one namespace", []client.ListOption{client.InNamespace("gloo-mesh")}, []string{"gloo-mesh/a", "gloo-mesh/b", "gloo-mesh/c"}},
		{"by label", []client.ListOption{client.MatchingLabels{"app": "relay"}, client.InNamespace("gloo-mesh")}, []string{"gloo-mesh/a", "gloo-mesh/b"}},
		{"by name", []client.ListOption{client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", "a")}}, []string{"gloo-mesh/a", "other/a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var list corev1.SecretList
			if err := r.List(t.Context(), &list, tc.opts...); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range list.Items {
				got = append(got, s.Namespace+"/"+s.Name)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	err := r.List(t.Context(), &corev1.SecretList{}, client.MatchingFields{"type": "kubernetes.io/tls"})
	if !apierrors.IsBadRequest(err) {
		t.Errorf("List by an unsupported field = %v, want BadRequest", err)
	}
	var configMaps corev1.ConfigMapList
	if err := r.List(t.Context(), &configMaps); err != nil || len(configMaps.Items) != 0 {
		t.Errorf("List of a kind it does not hold = %v, %v, want empty", err, configMaps.Items)
	}
}
