package webhook_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/webhook"
	"github.com/meshrelay/meshrelay/webhook/injector"
)

func TestAgentPodsGetTheirCertificatesThroughKubectl(t *testing.T) {
	e := startWebhook(t, true)

	deployment := func(name, ns string, labels map[string]string) string {
		return toYAML(t, &appsv1.Deployment{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptrTo(int32(2)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: merge(map[string]string{"app": name}, labels)},
					Spec: corev1.PodSpec{Containers: []corev1.Container{
						{Name: config.DefaultAgentContainer, Image: "ghcr.io/meshrelay/meshrelay:test"},
					}},
				},
			},
		})
	}
	pods := func(t *testing.T, ns, app string, n int) []corev1.Pod {
		t.Helper()
		var list corev1.PodList
		testenv.Eventually(t, fmt.Sprintf("kube-controller-manager makes %d pods of %s/%s", n, ns, app), time.Minute, func() error {
			if err := e.cluster.Client.List(e.ctx, &list, client.InNamespace(ns), client.MatchingLabels{"app": app}); err != nil {
				return err
			}
			if len(list.Items) != n {
				return fmt.Errorf("%d pods", len(list.Items))
			}
			return nil
		})
		return list.Items
	}
	injected := map[string]string{"meshrelay.dev/inject": "relay-agent"}

	t.Run("each pod of a labelled agent Deployment carries the volumes, mounts and settings", func(t *testing.T) {
		e.mustApply(t, deployment("relay-agent", config.DefaultNamespace, injected))
		for _, p := range pods(t, config.DefaultNamespace, "relay-agent", 2) {
			vols := map[string]*corev1.SecretVolumeSource{}
			for _, v := range p.Spec.Volumes {
				vols[v.Name] = v.Secret
			}
			for name, secret := range map[string]string{
				"relay-client-tls": config.DefaultClientTLSSecret, "relay-root-tls": config.DefaultRootTLSSecret,
				"relay-identity-token": config.DefaultTokenSecret,
			} {
				if s := vols[name]; s == nil || s.SecretName != secret || s.Optional == nil || !*s.Optional {
					t.Errorf("pod %s: volume %s = %+v, want optional secret %s", p.Name, name, s, secret)
				}
			}
			c := p.Spec.Containers[0]
			mounts := 0
			for _, m := range c.VolumeMounts {
				if strings.HasPrefix(m.Name, "relay-") {
					mounts++
					if !m.ReadOnly {
						t.Errorf("pod %s: mount %s is writable", p.Name, m.Name)
					}
				}
			}
			if mounts != 4 {
				t.Errorf("pod %s: %d relay mounts, want 4: %+v", p.Name, mounts, c.VolumeMounts)
			}
			checkTrustBundle(t, &p)
			env := map[string]string{}
			for _, v := range c.Env {
				env[v.Name] = v.Value
			}
			want := map[string]string{
				config.EnvCluster: cluster, config.EnvServerAddress: "gloo-mesh-mgmt-server.gloo-mesh:9900", config.EnvAuthority: config.DefaultAuthority,
				config.EnvTrustBundleDir: injector.TrustBundleMount,
			}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("pod %s: env %s = %q, want %q", p.Name, k, env[k], v)
				}
			}
		}
	})

	t.Run("a pod without the label is untouched", func(t *testing.T) {
		e.mustApply(t, deployment("other-app", config.DefaultNamespace, nil))
		for _, p := range pods(t, config.DefaultNamespace, "other-app", 2) {
			if len(p.Spec.Volumes) > 1 || len(p.Spec.Containers[0].Env) > 0 {
				t.Errorf("pod %s was changed: volumes %v, env %v", p.Name, p.Spec.Volumes, p.Spec.Containers[0].Env)
			}
		}
	})

	t.Run("kube-system is never sent to the webhook", func(t *testing.T) {
		before := e.injectCalls()
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "labelled-agent", Labels: injected},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: config.DefaultAgentContainer, Image: "x"}}},
		}
		e.mustApply(t, toYAML(t, withTypeMeta(pod)))
		var got corev1.Pod
		if err := e.cluster.Client.Get(e.ctx, types.NamespacedName{Namespace: "kube-system", Name: pod.Name}, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Spec.Containers[0].Env) > 0 {
			t.Errorf("the kube-system pod was injected: %v", got.Spec.Containers[0].Env)
		}
		if after := e.injectCalls(); after != before {
			t.Errorf("the injector was called %v times for a kube-system pod", after-before)
		}
		if before == 0 {
			t.Error("the injector's request counter never moved: the check above proves nothing")
		}
	})
}

// checkTrustBundle checks the trust bundle volume of an agent pod as the
// API server stored it: the root secret's ca.crt and, since the local
// cluster serves ClusterTrustBundles (Kubernetes 1.37), the relay
// ClusterTrustBundle of the pod's namespace, both optional.
func checkTrustBundle(t *testing.T, p *corev1.Pod) {
	t.Helper()
	var src *corev1.ProjectedVolumeSource
	for _, v := range p.Spec.Volumes {
		if v.Name == injector.TrustBundleVolume {
			src = v.Projected
		}
	}
	if src == nil || len(src.Sources) != 2 {
		t.Fatalf("pod %s: trust bundle volume %+v, want a projected volume of two sources", p.Name, src)
	}
	sec, ctb := src.Sources[0].Secret, src.Sources[1].ClusterTrustBundle
	if sec == nil || sec.Name != config.DefaultRootTLSSecret || len(sec.Items) != 1 || sec.Items[0].Key != "ca.crt" ||
		sec.Items[0].Path != injector.TrustBundleRootFile || sec.Optional == nil || !*sec.Optional {
		t.Errorf("pod %s: first source %+v, want optional %s ca.crt as %s", p.Name, sec, config.DefaultRootTLSSecret, injector.TrustBundleRootFile)
	}
	if ctb == nil || ctb.Name == nil || *ctb.Name != meshv1alpha1.TrustBundleName(p.Namespace) || ctb.SignerName != nil ||
		ctb.Path != injector.TrustBundleFile || ctb.Optional == nil || !*ctb.Optional {
		t.Errorf("pod %s: second source %+v, want the optional ClusterTrustBundle %s, by name", p.Name, ctb, meshv1alpha1.TrustBundleName(p.Namespace))
	}
}

// injectCalls is how many admission requests the injector has answered.
func (e *webhookEnv) injectCalls() float64 {
	return testenv.MetricValue(testenv.ScrapeMetric("http://"+e.metrics+"/metrics", `controller_runtime_webhook_requests_total{code="200",webhook="`+webhook.InjectPath+`"}`))
}

func withTypeMeta(p *corev1.Pod) *corev1.Pod {
	p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	return p
}

func merge(a, b map[string]string) map[string]string {
	for k, v := range b {
		a[k] = v
	}
	return a
}

func ptrTo[T any](v T) *T { return &v }
