// Package injector adds what a relay agent needs to its pods: the relay
// secrets as read-only volumes, the relay trust bundle, and its settings
// as environment.
//
// The trust bundle is a projected volume at TrustBundleMount holding the
// roots of relay-root-tls-secret's ca.crt (TrustBundleRootFile) and, where
// the cluster serves ClusterTrustBundles (certificates.k8s.io/v1), the
// relay ClusterTrustBundle of the pod's namespace (TrustBundleFile). The
// agent reads its trust anchors from it (MESHRELAY_TRUST_BUNDLE_DIR) and
// watches it, so a root rotation reaches a running agent: the kubelet
// updates a projected volume in place. The secret volumes serve tools and
// sidecars that read files; the agent reads those secrets through the API.
//
// Every volume and source is optional. The client secret appears only
// after the agent bootstraps; the root secret may be absent when the
// client secret carries ca.crt (the reference's known issue 004); the
// identity token is needed only to bootstrap; the ClusterTrustBundle
// exists once an agent has published it. A required volume would keep the
// pod from starting in exactly those cases.
//
// Pod is idempotent and leaves what the user set alone, so that it is safe
// under reinvocationPolicy IfNeeded and on its own output. It marks what it
// injected with InjectedAnnotation, and Injected tells a pod that was
// created without the injection (before the webhook was in force) from one
// that has it.
package injector

import (
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Volumes the injector adds, and where they are mounted.
const (
	ClientVolume      = "relay-client-tls"
	RootVolume        = "relay-root-tls"
	TokenVolume       = "relay-identity-token"
	TrustBundleVolume = "relay-trust-bundle"
	ClientMount       = "/etc/meshrelay/client-tls"
	RootMount         = "/etc/meshrelay/root-tls"
	TokenMount        = "/etc/meshrelay/identity-token"
	TrustBundleMount  = "/etc/meshrelay/trust-bundle"
)

// Files of the trust bundle volume.
const (
	// TrustBundleRootFile holds relay-root-tls-secret's ca.crt.
	TrustBundleRootFile = "root-ca.crt"
	// TrustBundleFile holds the relay ClusterTrustBundle's roots.
	TrustBundleFile = "bundle.pem"
)

// InjectedAnnotation, set to "true" on a pod, records that relay-webhook
// injected it. An agent pod without it, and without what Pod adds, was
// created while the webhook was not in force.
const InjectedAnnotation = "meshrelay.dev/injected"

// Settings is what the injector adds to an agent pod.
type Settings struct {
	Cluster         string
	ServerAddress   string
	Authority       string
	ClientTLSSecret string
	RootTLSSecret   string
	TokenSecret     string
	// Container gets the mounts and environment; the first container when
	// none has this name.
	Container string
	// Namespace is the pod's namespace when the pod itself names none
	// (the admission request's): the trust bundle selects the
	// ClusterTrustBundle labelled with it.
	Namespace string
	// ClusterTrustBundles adds the relay ClusterTrustBundle to the trust
	// bundle volume; set it only where the cluster serves
	// certificates.k8s.io/v1 ClusterTrustBundles.
	ClusterTrustBundles bool
}

// Validate returns what is missing or malformed in s, with the fix.
func (s Settings) Validate() error {
	if msgs := validation.IsDNS1123Label(s.Cluster); len(msgs) > 0 {
		return fmt.Errorf("cluster %q is not a DNS-1123 label: set --cluster to this workload cluster's registered name", s.Cluster)
	}
	if _, port, err := net.SplitHostPort(s.ServerAddress); err != nil || port == "" {
		return fmt.Errorf("server address %q is not host:port: set --server-address to relay-server's, for example gloo-mesh-mgmt-server.gloo-mesh:9900", s.ServerAddress)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("server address %q has no valid port", s.ServerAddress)
	}
	if msgs := validation.IsDNS1123Subdomain(s.Authority); len(msgs) > 0 {
		return fmt.Errorf("authority %q is not a DNS name: set --authority", s.Authority)
	}
	for _, n := range []string{s.ClientTLSSecret, s.RootTLSSecret, s.TokenSecret} {
		if msgs := validation.IsDNS1123Subdomain(n); len(msgs) > 0 {
			return fmt.Errorf("secret name %q is not a DNS-1123 subdomain", n)
		}
	}
	return nil
}

// Pod adds the volumes, mounts and environment to pod, marks it with
// InjectedAnnotation, and reports whether it changed anything. Entries the
// pod already has under the same name (or, for mounts, the same path) are
// kept as the user set them. A pod without containers is left alone.
func Pod(pod *corev1.Pod, s Settings) (changed bool) {
	if len(pod.Spec.Containers) == 0 {
		return false
	}
	changed = inject(pod, s.all(pod))
	if pod.Annotations[InjectedAnnotation] != "true" {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[InjectedAnnotation] = "true"
		changed = true
	}
	return changed
}

// Injected reports whether pod has the injection: it carries
// InjectedAnnotation, or (a pod injected before the annotation existed)
// every secret volume, mount and setting Pod added then. The trust bundle
// came after the annotation, so a pod without it is not told apart by it.
// pod is not changed.
func Injected(pod *corev1.Pod, s Settings) bool {
	if pod.Annotations[InjectedAnnotation] == "true" || len(pod.Spec.Containers) == 0 {
		return true
	}
	return !inject(pod.DeepCopy(), s.secretsAndSettings())
}

// additions is what the injector adds to a pod: volumes, and the agent
// container's mounts and environment.
type additions struct {
	volumes []corev1.Volume
	mounts  []corev1.VolumeMount
	env     []corev1.EnvVar
	// container names the agent container; the first when none has it.
	container string
}

// all is everything Pod adds to pod.
func (s Settings) all(pod *corev1.Pod) additions {
	a := s.secretsAndSettings()
	a.volumes = append(a.volumes, corev1.Volume{Name: TrustBundleVolume, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: s.trustBundleSources(pod)},
	}})
	a.mounts = append(a.mounts, corev1.VolumeMount{Name: TrustBundleVolume, MountPath: TrustBundleMount, ReadOnly: true})
	a.env = append(a.env, corev1.EnvVar{Name: config.EnvTrustBundleDir, Value: TrustBundleMount})
	return a
}

// secretsAndSettings is what Pod added before the trust bundle: the relay
// secrets' volumes and mounts and the agent's three settings.
func (s Settings) secretsAndSettings() additions {
	a := additions{container: s.Container}
	for _, v := range []struct{ name, secret, path string }{
		{ClientVolume, s.ClientTLSSecret, ClientMount}, {RootVolume, s.RootTLSSecret, RootMount}, {TokenVolume, s.TokenSecret, TokenMount},
	} {
		a.volumes = append(a.volumes, corev1.Volume{Name: v.name, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: v.secret, Optional: ptr.To(true)},
		}})
		a.mounts = append(a.mounts, corev1.VolumeMount{Name: v.name, MountPath: v.path, ReadOnly: true})
	}
	for _, e := range []struct{ name, value string }{
		{config.EnvCluster, s.Cluster}, {config.EnvServerAddress, s.ServerAddress}, {config.EnvAuthority, s.Authority},
	} {
		a.env = append(a.env, corev1.EnvVar{Name: e.name, Value: e.value})
	}
	return a
}

// trustBundleSources are the trust bundle volume's sources: the root
// secret's ca.crt, and the ClusterTrustBundle of the pod's namespace where
// the cluster serves them. Both optional: the pod starts before either
// exists, and the kubelet fills the files in when they appear.
func (s Settings) trustBundleSources(pod *corev1.Pod) []corev1.VolumeProjection {
	sources := []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{
		LocalObjectReference: corev1.LocalObjectReference{Name: s.RootTLSSecret},
		Items:                []corev1.KeyToPath{{Key: relaysecret.KeyCACert, Path: TrustBundleRootFile}},
		Optional:             ptr.To(true),
	}}}
	if !s.ClusterTrustBundles {
		return sources
	}
	ns := pod.Namespace
	if ns == "" {
		ns = s.Namespace
	}
	// By name, not by signer and label: any account that may publish a
	// bundle for the signer (every agent's) could otherwise label one of
	// its own for this namespace and add a root to these agents' trust.
	return append(sources, corev1.VolumeProjection{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{
		Name:     ptr.To(meshv1alpha1.TrustBundleName(ns)),
		Path:     TrustBundleFile,
		Optional: ptr.To(true),
	}})
}

// inject adds a to pod, which has a container, and reports whether it
// added anything. Volumes the pod has under the same name, mounts under
// the same name or path and variables under the same name are kept.
func inject(pod *corev1.Pod, a additions) (changed bool) {
	for _, v := range a.volumes {
		if !hasVolume(pod, v.Name) {
			pod.Spec.Volumes = append(pod.Spec.Volumes, v)
			changed = true
		}
	}
	c := agentContainer(pod, a.container)
	for _, m := range a.mounts {
		if !hasMount(c, m.Name, m.MountPath) {
			c.VolumeMounts = append(c.VolumeMounts, m)
			changed = true
		}
	}
	for _, e := range a.env {
		if !hasEnv(c, e.Name) {
			c.Env = append(c.Env, e)
			changed = true
		}
	}
	return changed
}
func agentContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return &pod.Spec.Containers[0]
}

func hasVolume(pod *corev1.Pod, name string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

func hasMount(c *corev1.Container, name, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == name || m.MountPath == path {
			return true
		}
	}
	return false
}

func hasEnv(c *corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}
