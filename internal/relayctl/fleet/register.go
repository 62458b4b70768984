package fleet

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// RegisterOptions say what Register does.
type RegisterOptions struct {
	// Name is the workload cluster's name: a DNS-1123 label, the DNS name
	// of its client certificate.
	Name string
	// Server names the relay secrets on the management cluster.
	Server *config.Server
	// Agent names the relay secrets on the workload cluster.
	Agent *config.Agent
	// Force replaces a workload secret whose value differs from the
	// management cluster's.
	Force bool
	// DryRun checks everything and changes nothing.
	DryRun bool
}

// Step is one thing Register did or would do.
type Step struct {
	Cluster string `json:"cluster"`
	Object  string `json:"object"`
	// Action is created, updated, unchanged, or "would create" and the like
	// in a dry run.
	Action string `json:"action"`
}

// Register does the manual steps of reference 001 for one workload
// cluster: it copies the root CA's ca.crt and the identity token from the
// management cluster into the workload cluster, then creates the
// KubernetesCluster on the management cluster. It checks everything before
// changing anything: the name, that both secrets exist on the management
// cluster, and that no workload secret holds a different value (unless
// Force).
func Register(ctx context.Context, mgmt, remote client.Client, o RegisterOptions) ([]Step, error) {
	if err := pki.CheckDNSLabel(o.Name); err != nil {
		return nil, fmt.Errorf("cluster name %q: %w", o.Name, err)
	}
	srv, ag := o.Server, o.Agent
	rootKey := srv.RootTLSSecret.NamespacedName(srv.Namespace)
	tokenKey := srv.TokenSecret.NamespacedName(srv.Namespace)
	root, err := getSecret(ctx, mgmt, rootKey, "management",
		"relay-server creates it when it starts with its CA on; with disableCaCertGeneration, create it with the root's ca.crt")
	if err != nil {
		return nil, err
	}
	caCrt := root.Data[relaysecret.KeyCACert]
	if _, err := pki.DecodeCertificates(caCrt); err != nil {
		return nil, fmt.Errorf("management secret %s: %s: %w", rootKey, relaysecret.KeyCACert, err)
	}
	tokenSecret, err := getSecret(ctx, mgmt, tokenKey, "management",
		"relay-server creates it unless disableTokenGeneration; then create it with a random token")
	if err != nil {
		return nil, err
	}
	token := tokenSecret.Data[srv.TokenSecret.Key]
	if len(token) == 0 {
		return nil, fmt.Errorf("management secret %s has no %q key: put the identity token there", tokenKey, srv.TokenSecret.Key)
	}

	wants := []struct {
		key  types.NamespacedName
		data map[string][]byte
	}{
		{ag.RootTLSSecret.NamespacedName(ag.Namespace), map[string][]byte{relaysecret.KeyCACert: caCrt}},
		{ag.TokenSecret.NamespacedName(ag.Namespace), map[string][]byte{ag.TokenSecret.Key: token}},
	}
	// Check first: a differing secret stops everything unless forced.
	existing := make([]*corev1.Secret, len(wants))
	for i, w := range wants {
		cur, err := lookupSecret(ctx, remote, w.key, "workload cluster")
		if err != nil {
			return nil, err
		}
		existing[i] = cur
		if cur == nil || o.Force {
			continue
		}
		if k := differingKey(cur.Data, w.data); k != "" {
			return nil, fmt.Errorf("workload secret %s holds a different %s than the management cluster's: it was registered with another management cluster, or the root or token changed; rerun with --force to replace it", w.key, k)
		}
	}
	kc := &v1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: srv.Namespace, Name: o.Name}}
	kcExists := true
	if err := mgmt.Get(ctx, client.ObjectKeyFromObject(kc), kc); apierrors.IsNotFound(err) {
		kcExists = false
	} else if err != nil {
		return nil, fmt.Errorf("management cluster: failed to read KubernetesCluster %s: %w", o.Name, err)
	}

	var steps []Step
	act := func(cluster, object, action string) {
		if o.DryRun && action != "unchanged" {
			action = "would be " + action
		}
		steps = append(steps, Step{Cluster: cluster, Object: object, Action: action})
	}
	if !o.DryRun {
		if err := ensureNamespace(ctx, remote, ag.Namespace); err != nil {
			return nil, err
		}
	}
	for i, w := range wants {
		object := "secret " + w.key.String()
		cur := existing[i]
		switch {
		case cur == nil:
			if !o.DryRun {
				s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: w.key.Namespace, Name: w.key.Name}, Data: w.data}
				if err := remote.Create(ctx, s); err != nil {
					return steps, fmt.Errorf("workload cluster: failed to create %s: %w", object, err)
				}
			}
			act("workload", object, "created")
		case differingKey(cur.Data, w.data) == "":
			act("workload", object, "unchanged")
		default:
			if !o.DryRun {
				for k, v := range w.data {
					cur.Data[k] = v
				}
				if err := remote.Update(ctx, cur); err != nil {
					return steps, fmt.Errorf("workload cluster: failed to update %s: %w", object, err)
				}
			}
			act("workload", object, "updated")
		}
	}
	object := "KubernetesCluster " + srv.Namespace + "/" + o.Name
	if kcExists {
		act("management", object, "unchanged")
	} else {
		if !o.DryRun {
			if err := mgmt.Create(ctx, kc); err != nil {
				return steps, fmt.Errorf("management cluster: failed to create %s: %w", object, err)
			}
		}
		act("management", object, "created")
	}
	return steps, nil
}

// getSecret reads a secret that must exist; fix says how to make it.
func getSecret(ctx context.Context, c client.Client, key types.NamespacedName, side, fix string) (*corev1.Secret, error) {
	s, err := lookupSecret(ctx, c, key, side+" cluster")
	if err == nil && s == nil {
		err = fmt.Errorf("%s secret %s not found: %s", side, key, fix)
	}
	return s, err
}

func ensureNamespace(ctx context.Context, c client.Client, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("workload cluster: failed to create namespace %s: %w", name, err)
	}
	return nil
}

// differingKey returns a key of want whose value have does not hold, or
// "" when have holds all of want.
func differingKey(have, want map[string][]byte) string {
	for k, v := range want {
		if !bytes.Equal(have[k], v) {
			return k
		}
	}
	return ""
}
