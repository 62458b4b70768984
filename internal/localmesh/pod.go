package localmesh

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// Pod is what one pod of a rendered Deployment runs: its container's
// binary, arguments and environment, and the ServiceAccount it runs as.
type Pod struct {
	// Name is the pod name chosen for it, which fieldRef metadata.name
	// resolves to.
	Name, Namespace, Deployment string
	// ServiceAccount is the pod's ServiceAccount ("default" when the
	// Deployment names none, as Kubernetes does).
	ServiceAccount string
	// Binary is the base name of the container's command, such as
	// relay-server; Args are the command's further words, then args.
	Binary string
	Args   []string
	// Env is the container's environment, KEY=value each: envFrom first,
	// then env, so env wins as in a pod.
	Env []string
	// Mounts are the container's volume mounts that an argument or an
	// environment variable refers to (a path at or under their
	// mountPath); mounts nothing names are left out, as a local process
	// cannot read them anyway.
	Mounts []Mount
}

// Mount is a volume a Pod's arguments or environment refer to: a Secret,
// a ConfigMap, or a projected volume.
type Mount struct {
	// Path is the mountPath in the container.
	Path string
	// Kind is "Secret", "ConfigMap" or "Projected"; Name is the object a
	// Secret or ConfigMap volume holds.
	Kind, Name string
	// Projected is a projected volume's sources.
	Projected *corev1.ProjectedVolumeSource
}

// PodOf returns what a pod named pod of the Deployment deployment in objs
// runs. objs are the objects of one rendering (kubectl kustomize, helm
// template); ConfigMaps that the container's env refers to are read from
// them, as the API server would after applying them. The Deployment must
// have exactly one container.
func PodOf(objs []*unstructured.Unstructured, deployment, pod string) (*Pod, error) {
	var dep *appsv1.Deployment
	configMaps := map[string]*corev1.ConfigMap{}
	for _, u := range objs {
		switch u.GetKind() {
		case "Deployment":
			if u.GetName() != deployment {
				continue
			}
			if dep != nil {
				return nil, fmt.Errorf("the rendering holds two Deployments named %s", deployment)
			}
			dep = &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, dep); err != nil {
				return nil, fmt.Errorf("failed to decode Deployment %s: %w", deployment, err)
			}
		case "ConfigMap":
			cm := &corev1.ConfigMap{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, cm); err != nil {
				return nil, fmt.Errorf("failed to decode ConfigMap %s: %w", u.GetName(), err)
			}
			configMaps[cm.Namespace+"/"+cm.Name] = cm
		}
	}
	if dep == nil {
		return nil, fmt.Errorf("the rendering holds no Deployment named %s", deployment)
	}
	spec := dep.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		return nil, fmt.Errorf("deployment %s/%s has %d containers, want 1", dep.Namespace, deployment, len(spec.Containers))
	}
	c := spec.Containers[0]
	if len(c.Command) == 0 {
		return nil, fmt.Errorf("deployment %s/%s: container %s has no command: set command to the binary, such as [/relay-server]", dep.Namespace, deployment, c.Name)
	}
	p := &Pod{
		Name: pod, Namespace: dep.Namespace, Deployment: deployment,
		ServiceAccount: spec.ServiceAccountName,
		Binary:         path.Base(c.Command[0]),
		Args:           append(slices.Clone(c.Command[1:]), c.Args...),
	}
	if p.ServiceAccount == "" {
		p.ServiceAccount = "default"
	}
	where := fmt.Sprintf("Deployment %s/%s", dep.Namespace, deployment)
	configMap := func(name string) (*corev1.ConfigMap, error) {
		cm, ok := configMaps[dep.Namespace+"/"+name]
		if !ok {
			return nil, fmt.Errorf("%s refers to ConfigMap %s/%s, which the rendering does not hold", where, dep.Namespace, name)
		}
		return cm, nil
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := configMap(from.ConfigMapRef.Name)
			if err != nil {
				if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, err
			}
			for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
				p.Env = append(p.Env, from.Prefix+k+"="+cm.Data[k])
			}
		default:
			return nil, fmt.Errorf("%s: envFrom other than configMapRef is not supported here", where)
		}
	}
	for _, e := range c.Env {
		v, err := envValue(e, p, configMap)
		if err != nil {
			return nil, fmt.Errorf("%s: env %s: %w", where, e.Name, err)
		}
		p.Env = append(p.Env, e.Name+"="+v)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		named := func(a string) bool { return refersTo(a, vm.MountPath) }
		if !slices.ContainsFunc(p.Args, named) && !slices.ContainsFunc(p.Env, named) {
			continue
		}
		v, ok := volumes[vm.Name]
		switch {
		case !ok:
			return nil, fmt.Errorf("%s mounts volume %s, which the pod does not declare", where, vm.Name)
		case v.Secret != nil:
			p.Mounts = append(p.Mounts, Mount{Path: vm.MountPath, Kind: "Secret", Name: v.Secret.SecretName})
		case v.ConfigMap != nil:
			p.Mounts = append(p.Mounts, Mount{Path: vm.MountPath, Kind: "ConfigMap", Name: v.ConfigMap.Name})
		case v.Projected != nil:
			for i, src := range v.Projected.Sources {
				if src.Secret == nil && src.ClusterTrustBundle == nil {
					return nil, fmt.Errorf("%s: projected volume %s: source %d is neither a secret nor a clusterTrustBundle, which a local process cannot be given", where, vm.Name, i)
				}
			}
			p.Mounts = append(p.Mounts, Mount{Path: vm.MountPath, Kind: "Projected", Projected: v.Projected})
		default:
			return nil, fmt.Errorf("%s: volume %s is neither a Secret, a ConfigMap nor a projected volume, which a local process cannot be given", where, vm.Name)
		}
	}
	return p, nil
}

// envValue resolves one env entry as the kubelet would for pod p.
func envValue(e corev1.EnvVar, p *Pod, configMap func(string) (*corev1.ConfigMap, error)) (string, error) {
	from := e.ValueFrom
	switch {
	case from == nil:
		return e.Value, nil
	case from.FieldRef != nil:
		switch from.FieldRef.FieldPath {
		case "metadata.name":
			return p.Name, nil
		case "metadata.namespace":
			return p.Namespace, nil
		case "spec.serviceAccountName":
			return p.ServiceAccount, nil
		}
		return "", fmt.Errorf("fieldRef %s is not supported here (metadata.name, metadata.namespace, spec.serviceAccountName are)", from.FieldRef.FieldPath)
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := configMap(ref.Name)
		if err != nil {
			if optional {
				return "", nil
			}
			return "", err
		}
		v, ok := cm.Data[ref.Key]
		if !ok && !optional {
			return "", fmt.Errorf("ConfigMap %s has no key %s", ref.Name, ref.Key)
		}
		return v, nil
	}
	return "", fmt.Errorf("only a literal value, fieldRef and configMapKeyRef are supported here")
}

// refersTo reports whether the argument arg names dir or a path under it,
// as --cert-dir=/etc/relay-webhook/tls or a lone path does; for an
// environment entry KEY=value, whether its value does.
func refersTo(arg, dir string) bool {
	if _, v, ok := strings.Cut(arg, "="); ok {
		arg = v
	}
	dir = strings.TrimSuffix(dir, "/")
	return arg == dir || strings.HasPrefix(arg, dir+"/")
}

// rewriteMount returns args (or environment entries) with each reference
// to the mount path from replaced by the local folder to.
func rewriteMount(args []string, from, to string) []string {
	out := slices.Clone(args)
	from = strings.TrimSuffix(from, "/")
	for i, a := range out {
		if refersTo(a, from) {
			out[i] = strings.Replace(a, from, to, 1)
		}
	}
	return out
}
