package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// restartedAtAnnotation is kubectl rollout restart's annotation, which
// autoRestartPods sets on a pod template beside
// meshv1alpha1.CACertsRevisionAnnotation, which keeps a restart to once per change.
const restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// Labels of the namespaces whose workloads carry Istio's sidecar.
const (
	injectionLabel = "istio-injection"
	revisionLabel  = "istio.io/rev"
)

// RestartClusterRole is the ClusterRole that lets relay-agent restart the
// workloads of one namespace once a RoleBinding binds it there: the
// istio-federated-trust component binds it in istio-system, and a user
// opts each injected namespace in with a RoleBinding of their own.
const RestartClusterRole = "relay-agent-istio-restart"

// restartIstio restarts what must pick up a new cacerts, as kubectl rollout
// restart would: istiod (Deployments labelled app=istiod in istioNS) first,
// then the Deployments, StatefulSets and DaemonSets of the namespaces
// labelled istio-injection=enabled or istio.io/rev where relay-agent may
// list them (RestartClusterRole bound there); the other injected
// namespaces are named in the log with how to opt them in. A workload
// whose pod template already carries rev is not restarted again. It
// returns the first error after trying every workload.
func restartIstio(ctx context.Context, r client.Reader, w client.Client, istioNS, rev string, now time.Time, log logr.Logger) error {
	var targets []client.Object
	var istiod appsv1.DeploymentList
	if err := r.List(ctx, &istiod, client.InNamespace(istioNS), client.MatchingLabels{"app": "istiod"}); err != nil {
		return fmt.Errorf("failed to list istiod Deployments in %s: %w", istioNS, err)
	}
	for i := range istiod.Items {
		targets = append(targets, &istiod.Items[i])
	}
	var namespaces corev1.NamespaceList
	if err := r.List(ctx, &namespaces); err != nil {
		return fmt.Errorf("failed to list namespaces: %w", err)
	}
	var notOptedIn []string
namespaces:
	for _, ns := range namespaces.Items {
		if ns.Labels[injectionLabel] != "enabled" && ns.Labels[revisionLabel] == "" {
			continue
		}
		var deps appsv1.DeploymentList
		var sets appsv1.StatefulSetList
		var daemons appsv1.DaemonSetList
		for _, l := range []client.ObjectList{&deps, &sets, &daemons} {
			err := r.List(ctx, l, client.InNamespace(ns.Name))
			if apierrors.IsForbidden(err) {
				notOptedIn = append(notOptedIn, ns.Name)
				continue namespaces
			}
			if err != nil {
				return fmt.Errorf("failed to list workloads in %s: %w", ns.Name, err)
			}
		}
		for i := range deps.Items {
			targets = append(targets, &deps.Items[i])
		}
		for i := range sets.Items {
			targets = append(targets, &sets.Items[i])
		}
		for i := range daemons.Items {
			targets = append(targets, &daemons.Items[i])
		}
	}
	var first error
	restarted := 0
	for _, o := range targets {
		tmpl := podTemplate(o)
		if tmpl.Annotations[meshv1alpha1.CACertsRevisionAnnotation] == rev {
			continue
		}
		orig := o.DeepCopyObject().(client.Object)
		if tmpl.Annotations == nil {
			tmpl.Annotations = map[string]string{}
		}
		tmpl.Annotations[restartedAtAnnotation] = now.UTC().Format(time.RFC3339)
		tmpl.Annotations[meshv1alpha1.CACertsRevisionAnnotation] = rev
		if err := w.Patch(ctx, o, client.MergeFrom(orig)); err != nil {
			err = fmt.Errorf("failed to restart %T %s: %w", o, client.ObjectKeyFromObject(o), err)
			log.Error(err, "autoRestartPods: restart failed")
			if first == nil {
				first = err
			}
			continue
		}
		restarted++
	}
	log.Info("autoRestartPods: restarted Istio's workloads for the new cacerts", "revision", rev, "restarted", restarted, "alreadyRestarted", len(targets)-restarted)
	if len(notOptedIn) > 0 {
		log.Info("autoRestartPods: injected namespaces not opted in, their workloads were not restarted and keep the old CA until they restart; "+
			"to opt one in, bind ClusterRole "+RestartClusterRole+" to relay-agent there: kubectl -n <namespace> create rolebinding "+RestartClusterRole+
			" --clusterrole="+RestartClusterRole+" --serviceaccount=<relay-agent's namespace>:relay-agent", "namespaces", notOptedIn)
	}
	return first
}

// podTemplate returns the pod template of a Deployment, StatefulSet or
// DaemonSet.
func podTemplate(o client.Object) *corev1.PodTemplateSpec {
	switch w := o.(type) {
	case *appsv1.Deployment:
		return &w.Spec.Template
	case *appsv1.StatefulSet:
		return &w.Spec.Template
	case *appsv1.DaemonSet:
		return &w.Spec.Template
	}
	panic(fmt.Sprintf("no pod template in %T", o))
}
