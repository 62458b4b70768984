// Package injector adds what a relay agent needs to its pods: the relay
// secrets as read-only volumes, and its settings as environment.
//
// Every volume is optional. The client secret appears only after the agent
// bootstraps; the root secret may be absent when the client secret carries
// ca.crt (the reference's known issue 004); the identity token is needed
// only to bootstrap. A required volume would keep the pod from starting in
// exactly those cases. The agent reads its secrets through the API and
// watches them; the mounts serve tools and sidecars that read files.
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

	"github.com/meshrelay/meshrelay/pkg/config"
)

// Volumes the injector adds, and where they are mounted.
const (
	ClientVolume = "relay-client-tls"
	RootVolume   = "relay-root-tls"
	TokenVolume  = "relay-identity-token"
	ClientMount  = "/etc/meshrelay/client-tls"
	RootMount    = "/etc/meshrelay/root-tls"
	TokenMount   = "/etc/meshrelay/identity-token"
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
	changed = inject(pod, s)
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
// every volume, mount and setting Pod adds. pod is not changed.
func Injected(pod *corev1.Pod, s Settings) bool {
	if pod.Annotations[InjectedAnnotation] == "true" || len(pod.Spec.Containers) == 0 {
		return true
	}
	return !inject(pod.DeepCopy(), s)
}

// inject adds the volumes, mounts and environment to pod, which has a
// container, and reports whether it added any.
func inject(pod *corev1.Pod, s Settings) (changed bool) {
	for _, v := range []struct{ name, secret string }{
		{ClientVolume, s.ClientTLSSecret}, {RootVolume, s.RootTLSSecret}, {TokenVolume, s.TokenSecret},
	} {
		if !hasVolume(pod, v.name) {
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: v.name, VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: v.secret, Optional: ptr.To(true)},
			}})
			changed = true
		}
	}
	c := agentContainer(pod, s.Container)
	for _, m := range []struct{ name, path string }{{ClientVolume, ClientMount}, {RootVolume, RootMount}, {TokenVolume, TokenMount}} {
		if !hasMount(c, m.name, m.path) {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: m.name, MountPath: m.path, ReadOnly: true})
			changed = true
		}
	}
	for _, e := range []struct{ name, value string }{
		{config.EnvCluster, s.Cluster}, {config.EnvServerAddress, s.ServerAddress}, {config.EnvAuthority, s.Authority},
	} {
		if !hasEnv(c, e.name) {
			c.Env = append(c.Env, corev1.EnvVar{Name: e.name, Value: e.value})
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
