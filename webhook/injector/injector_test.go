package injector

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/pkg/config"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

var settings = Settings{
	Cluster: "cluster-1", ServerAddress: "gloo-mesh-mgmt-server.gloo-mesh:9900", Authority: "gloo-mesh-mgmt-server.gloo-mesh",
	ClientTLSSecret: "relay-client-tls-secret", RootTLSSecret: "relay-root-tls-secret", TokenSecret: "relay-identity-token-secret",
	Container: "relay-agent", Namespace: "gloo-mesh", ClusterTrustBundles: true,
}

// TestPodPatchesMatchTheGoldenFiles injects each testdata/<case>.in.yaml
// and compares the JSON patch the webhook returns with <case>.patch.json.
func TestPodPatchesMatchTheGoldenFiles(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs in testdata: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			pod := readPod(t, in)
			original, _ := json.Marshal(pod)
			if !Pod(pod, settings) {
				t.Fatal("nothing injected")
			}
			mutated, _ := json.Marshal(pod)
			ops, err := jsonpatch.CreatePatch(original, mutated)
			if err != nil {
				t.Fatal(err)
			}
			// CreatePatch orders operations by map iteration: sort them.
			sort.Slice(ops, func(i, j int) bool { return ops[i].Path < ops[j].Path })
			got, _ := json.MarshalIndent(ops, "", "  ")
			golden := filepath.Join("testdata", name+".patch.json")
			if *update {
				if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./webhook/injector -update to write it)", err)
			}
			if strings.TrimSpace(string(want)) != strings.TrimSpace(string(got)) {
				t.Errorf("patch differs from %s:\n%s", golden, got)
			}
			again := pod.DeepCopy()
			if Pod(again, settings) || !equality.Semantic.DeepEqual(again, pod) {
				t.Error("injecting the injected pod changed it")
			}
		})
	}
}

func TestWhatTheUserSetIsKept(t *testing.T) {
	pod := readPod(t, "testdata/user-set.in.yaml")
	Pod(pod, settings)
	c := pod.Spec.Containers[0]
	for _, e := range c.Env {
		if e.Name == "MESHRELAY_AUTHORITY" && e.Value != "relay.internal.example" {
			t.Errorf("the user's MESHRELAY_AUTHORITY became %q", e.Value)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == RootVolume && (v.Secret == nil || v.Secret.SecretName != "my-root") {
			t.Errorf("the user's %s volume was replaced: %+v", RootVolume, v)
		}
	}
	n := 0
	for _, m := range c.VolumeMounts {
		if m.MountPath == RootMount {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d mounts at %s, want the user's one", n, RootMount)
	}
}

func TestReinvocationAfterAnotherWebhookAddsNothingTwice(t *testing.T) {
	pod := readPod(t, "testdata/agent.in.yaml")
	Pod(pod, settings)
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "istio-proxy"})
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "istio-envoy"})
	before := pod.DeepCopy()
	if Pod(pod, settings) || !equality.Semantic.DeepEqual(before, pod) {
		t.Error("a second invocation after another webhook changed the pod")
	}
}

func TestInjectedTellsAPodCreatedWithoutTheWebhook(t *testing.T) {
	for _, tc := range []struct {
		name string
		pod  func() *corev1.Pod
		want bool
	}{
		{"a pod as its Deployment makes it, not injected", func() *corev1.Pod { return readPod(t, "testdata/agent.in.yaml") }, false},
		{"an injected pod", func() *corev1.Pod {
			p := readPod(t, "testdata/agent.in.yaml")
			Pod(p, settings)
			return p
		}, true},
		{"a pod injected before the annotation existed", func() *corev1.Pod {
			p := readPod(t, "testdata/agent.in.yaml")
			Pod(p, settings)
			delete(p.Annotations, InjectedAnnotation)
			return p
		}, true},
		{"a pod injected before the trust bundle, with the annotation", func() *corev1.Pod {
			p := readPod(t, "testdata/agent.in.yaml")
			Pod(p, settings)
			dropTrustBundle(p)
			return p
		}, true},
		{"a pod injected before the annotation and the trust bundle existed", func() *corev1.Pod {
			p := readPod(t, "testdata/agent.in.yaml")
			Pod(p, settings)
			dropTrustBundle(p)
			delete(p.Annotations, InjectedAnnotation)
			return p
		}, true},
		{"a pod without the annotation that lacks one setting", func() *corev1.Pod {
			p := readPod(t, "testdata/agent.in.yaml")
			Pod(p, settings)
			delete(p.Annotations, InjectedAnnotation)
			p.Spec.Containers[0].Env = p.Spec.Containers[0].Env[1:]
			return p
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := tc.pod()
			before := pod.DeepCopy()
			if got := Injected(pod, settings); got != tc.want {
				t.Errorf("Injected = %v, want %v", got, tc.want)
			}
			if !equality.Semantic.DeepEqual(before, pod) {
				t.Error("Injected changed the pod")
			}
		})
	}
}

// dropTrustBundle takes out of p what Pod adds for the trust bundle, as a
// pod injected by a relay-webhook before it had them.
func dropTrustBundle(p *corev1.Pod) {
	p.Spec.Volumes = slices.DeleteFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == TrustBundleVolume })
	c := &p.Spec.Containers[0]
	c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == TrustBundleVolume })
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == config.EnvTrustBundleDir })
}

func TestTheTrustBundle(t *testing.T) {
	trustBundle := func(p *corev1.Pod) *corev1.ProjectedVolumeSource {
		for _, v := range p.Spec.Volumes {
			if v.Name == TrustBundleVolume {
				return v.Projected
			}
		}
		t.Fatalf("no %s volume in %+v", TrustBundleVolume, p.Spec.Volumes)
		return nil
	}
	t.Run("where ClusterTrustBundles are not served, the root secret alone", func(t *testing.T) {
		p := readPod(t, "testdata/agent.in.yaml")
		s := settings
		s.ClusterTrustBundles = false
		Pod(p, s)
		want := []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: "relay-root-tls-secret"},
			Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: TrustBundleRootFile}},
			Optional:             ptr.To(true),
		}}}
		if got := trustBundle(p).Sources; !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("sources %s, want %s", toJSON(got), toJSON(want))
		}
	})
	t.Run("the ClusterTrustBundle selected is the one of the pod's namespace, or of the request's when the pod names none", func(t *testing.T) {
		for _, tc := range []struct{ podNamespace, want string }{{"relay", "relay"}, {"", settings.Namespace}} {
			p := readPod(t, "testdata/agent.in.yaml")
			p.Namespace = tc.podNamespace
			Pod(p, settings)
			sources := trustBundle(p).Sources
			if len(sources) != 2 || sources[1].ClusterTrustBundle == nil {
				t.Fatalf("sources %s, want the secret and a ClusterTrustBundle", toJSON(sources))
			}
			ctb := sources[1].ClusterTrustBundle
			// By name only: selected by signer and label, it could be a
			// bundle another agent account published.
			if ctb.Name == nil || *ctb.Name != "meshrelay.dev:relay-root:"+tc.want || ctb.SignerName != nil || ctb.LabelSelector != nil ||
				ctb.Path != TrustBundleFile || !*ctb.Optional {
				t.Errorf("pod namespace %q: ClusterTrustBundle source %s, want name meshrelay.dev:relay-root:%s, optional", tc.podNamespace, toJSON(ctb), tc.want)
			}
		}
	})
	t.Run("the agent is told where it is mounted", func(t *testing.T) {
		p := readPod(t, "testdata/agent.in.yaml")
		Pod(p, settings)
		c := p.Spec.Containers[0]
		if !slices.Contains(c.Env, corev1.EnvVar{Name: "MESHRELAY_TRUST_BUNDLE_DIR", Value: TrustBundleMount}) ||
			!slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == TrustBundleVolume && m.MountPath == TrustBundleMount && m.ReadOnly
			}) {
			t.Errorf("env %v, mounts %v", c.Env, c.VolumeMounts)
		}
	})
	t.Run("a trust bundle the Deployment declares is kept, and injecting once the API appears adds nothing", func(t *testing.T) {
		p := readPod(t, "testdata/agent.in.yaml")
		s := settings
		s.ClusterTrustBundles = false
		Pod(p, s)
		before := p.DeepCopy()
		if Pod(p, settings) || !equality.Semantic.DeepEqual(before, p) {
			t.Error("a pod with a trust bundle volume got another one")
		}
	})
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestSettingsValidateNamesTheProblem(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Settings)
		want   string
	}{
		{"a cluster name with an underscore", func(s *Settings) { s.Cluster = "cluster_1" }, `cluster "cluster_1" is not a DNS-1123 label`},
		{"no server address", func(s *Settings) { s.ServerAddress = "" }, "set --server-address"},
		{"a server address without a port", func(s *Settings) { s.ServerAddress = "relay.example" }, "is not host:port"},
		{"a bad secret name", func(s *Settings) { s.TokenSecret = "Token" }, `secret name "Token"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := settings
			tc.change(&s)
			if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	if err := settings.Validate(); err != nil {
		t.Errorf("good settings: %v", err)
	}
}

// FuzzPodIsIdempotent injects arbitrary pods: it never panics, a second
// injection changes nothing, and no container gains a duplicate mount path
// or env name.
func FuzzPodIsIdempotent(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	for _, in := range inputs {
		data, _ := os.ReadFile(in)
		j, _ := yaml.YAMLToJSON(data)
		f.Add(j)
	}
	f.Add([]byte(`{"spec":{"containers":[]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var pod corev1.Pod
		if json.Unmarshal(data, &pod) != nil {
			return
		}
		dupsBefore := duplicates(&pod)
		Pod(&pod, settings)
		once := pod.DeepCopy()
		if Pod(&pod, settings) || !equality.Semantic.DeepEqual(once, &pod) {
			t.Fatal("second injection changed the pod")
		}
		if d := duplicates(&pod); d > dupsBefore {
			t.Fatalf("injection added %d duplicate mount paths or env names", d-dupsBefore)
		}
	})
}

func duplicates(pod *corev1.Pod) int {
	n := 0
	for _, c := range pod.Spec.Containers {
		seen := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if seen["m"+m.MountPath] {
				n++
			}
			seen["m"+m.MountPath] = true
		}
		for _, e := range c.Env {
			if seen["e"+e.Name] {
				n++
			}
			seen["e"+e.Name] = true
		}
	}
	return n
}

func readPod(t *testing.T, path string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &pod
}
