package fleet

import (
	"bytes"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
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
	// Force replaces a workload root CA secret whose ca.crt differs from
	// the management cluster's.
	Force bool
	// DryRun checks everything and changes nothing: DryRunClient writes
	// nothing, DryRunServer sends every write for the API servers to check
	// without persisting it.
	DryRun DryRun
	// TokenTTL is how long the cluster's new bootstrap token may be used;
	// zero means bootstraptoken.DefaultTTL.
	TokenTTL time.Duration
	// Now is the time the token is issued at; zero means the wall clock.
	Now time.Time
}

// Step is one thing Register did or would do.
type Step struct {
	Cluster string `json:"cluster"`
	Object  string `json:"object"`
	// Action is created, updated, unchanged, or "would be created" and the
	// like in a dry run.
	Action string `json:"action"`
	// TokenExpires is when the bootstrap token written by this step
	// expires, on the steps that write it.
	TokenExpires *time.Time `json:"tokenExpires,omitempty"`
}

// Register registers one workload cluster: it copies the root CA's ca.crt
// from the management cluster into the workload cluster, issues the cluster
// its own bootstrap token (random, single use, valid for TokenTTL), records
// the token's hash and expiry on the cluster's KubernetesCluster (creating
// it if absent), and writes the token into the workload cluster's token
// secret, replacing any earlier one. It checks everything before changing
// anything: the name, the lifetime, that the root exists on the management
// cluster, and that the workload root holds no different ca.crt (unless
// Force). Running it again issues a fresh token: the way back for an agent
// whose certificate expired or was revoked.
func Register(ctx context.Context, mgmt, remote client.Client, o RegisterOptions) ([]Step, error) {
	if err := pki.CheckDNSLabel(o.Name); err != nil {
		return nil, fmt.Errorf("cluster name %q: %w", o.Name, err)
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = bootstraptoken.DefaultTTL
	}
	if err := bootstraptoken.CheckTTL(o.TokenTTL); err != nil {
		return nil, fmt.Errorf("--token-ttl: %w", err)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	srv, ag := o.Server, o.Agent
	rootKey := srv.RootTLSSecret.NamespacedName(srv.Namespace)
	root, err := getSecret(ctx, mgmt, rootKey, "management",
		"relay-server creates it when it starts with its CA on; with disableCaCertGeneration, create it with the root's ca.crt")
	if err != nil {
		return nil, err
	}
	caCrt := root.Data[relaysecret.KeyCACert]
	if _, err := pki.DecodeCertificates(caCrt); err != nil {
		return nil, fmt.Errorf("management secret %s: %s: %w", rootKey, relaysecret.KeyCACert, err)
	}

	// Check first: a differing root stops everything unless forced.
	remoteRootKey := ag.RootTLSSecret.NamespacedName(ag.Namespace)
	remoteTokenKey := ag.TokenSecret.NamespacedName(ag.Namespace)
	rootWant := map[string][]byte{relaysecret.KeyCACert: caCrt}
	curRoot, err := lookupSecret(ctx, remote, remoteRootKey, "workload cluster")
	if err != nil {
		return nil, err
	}
	if curRoot != nil && !o.Force && differingKey(curRoot.Data, rootWant) != "" {
		return nil, fmt.Errorf("workload secret %s holds a different %s than the management cluster's: it was registered with another management cluster, or the root changed; rerun with --force to replace it", remoteRootKey, relaysecret.KeyCACert)
	}
	curToken, err := lookupSecret(ctx, remote, remoteTokenKey, "workload cluster")
	if err != nil {
		return nil, err
	}
	kc := &v1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: srv.Namespace, Name: o.Name}}
	kcExists := true
	if err := mgmt.Get(ctx, client.ObjectKeyFromObject(kc), kc); apierrors.IsNotFound(err) {
		kcExists = false
	} else if err != nil {
		return nil, fmt.Errorf("management cluster: failed to read KubernetesCluster %s: %w", o.Name, err)
	}

	var steps []Step
	act := func(cluster, object, action string, expires *time.Time) {
		action = o.DryRun.action(action)
		steps = append(steps, Step{Cluster: cluster, Object: object, Action: action, TokenExpires: expires})
	}
	w := secretWriter{remote: remote, dryRun: o.DryRun}
	if o.DryRun.sends() {
		created, err := ensureNamespace(ctx, remote, ag.Namespace, o.DryRun)
		if err != nil {
			return nil, err
		}
		// A namespace a server dry run only pretended to create does not
		// exist for the secrets that follow.
		w.absentNamespace = created && o.DryRun == DryRunServer
	}
	if curRoot != nil && differingKey(curRoot.Data, rootWant) != "" {
		// Forced over another root: a client certificate that does not
		// chain to the roots copied now is of no use to the agent, and
		// left in place it would be a certificate without a chain, which
		// relay-webhook refuses the root update for. The agent
		// bootstraps with the fresh token instead.
		if err := w.deleteUnchained(ctx, ag.ClientTLSSecret.NamespacedName(ag.Namespace), caCrt, o.Now, act); err != nil {
			return steps, err
		}
	}
	if err := w.write(ctx, remoteRootKey, curRoot, rootWant, act); err != nil {
		return steps, err
	}

	token, err := bootstraptoken.New()
	if err != nil {
		return steps, err
	}
	rec := bootstraptoken.Issue(token, o.Now, o.TokenTTL)
	// The record goes first: an agent that sees the token finds it.
	object := "KubernetesCluster " + srv.Namespace + "/" + o.Name
	action := "updated"
	if !kcExists {
		action = "created"
	}
	if o.DryRun.sends() {
		if err := recordToken(ctx, mgmt, kc, kcExists, rec, o.DryRun); err != nil {
			return steps, fmt.Errorf("management cluster: failed to record the bootstrap token on %s: %w", object, err)
		}
	}
	act("management", object, action, &rec.Expires)
	tokenWant := map[string][]byte{ag.TokenSecret.Key: []byte(token)}
	if err := w.write(ctx, remoteTokenKey, curToken, tokenWant, func(cluster, object, action string, _ *time.Time) {
		act(cluster, object, action, &rec.Expires)
	}); err != nil {
		return steps, err
	}
	return steps, nil
}

// recordToken writes rec on kc, creating kc when it does not exist, and
// retrying on conflicts with other writers of the KubernetesCluster.
func recordToken(ctx context.Context, mgmt client.Client, kc *v1alpha1.KubernetesCluster, exists bool, rec bootstraptoken.Record, dryRun DryRun) error {
	if !exists {
		kc.Annotations = map[string]string{}
		rec.Write(kc.Annotations)
		err := mgmt.Create(ctx, kc, dryRun.createOptions()...)
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := mgmt.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
			return err
		}
		if kc.Annotations == nil {
			kc.Annotations = map[string]string{}
		}
		rec.Write(kc.Annotations)
		return mgmt.Update(ctx, kc, dryRun.updateOptions()...)
	})
}

// secretWriter writes the workload cluster's secrets.
type secretWriter struct {
	remote client.Client
	dryRun DryRun
	// absentNamespace: the secrets' namespace does not exist, so a server
	// dry run cannot send their creation.
	absentNamespace bool
}

// write makes the workload secret key hold want: it creates it, or
// updates cur when a key differs, and reports the step through act.
func (w secretWriter) write(ctx context.Context, key types.NamespacedName, cur *corev1.Secret, want map[string][]byte, act func(cluster, object, action string, expires *time.Time)) error {
	object := "secret " + key.String()
	switch {
	case cur == nil:
		if w.absentNamespace {
			act("workload", object, "created", nil)
			return nil
		}
		if w.dryRun.sends() {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}, Data: want}
			if err := w.remote.Create(ctx, s, w.dryRun.createOptions()...); err != nil {
				return fmt.Errorf("workload cluster: failed to create %s: %w", object, err)
			}
		}
		act("workload", object, "created", nil)
	case differingKey(cur.Data, want) == "":
		act("workload", object, "unchanged", nil)
	default:
		if w.dryRun.sends() {
			if cur.Data == nil {
				cur.Data = map[string][]byte{}
			}
			for k, v := range want {
				cur.Data[k] = v
			}
			if err := w.remote.Update(ctx, cur, w.dryRun.updateOptions()...); err != nil {
				return fmt.Errorf("workload cluster: failed to update %s: %w", object, err)
			}
		}
		act("workload", object, "updated", nil)
	}
	return nil
}

// deleteUnchained deletes the client secret key when its certificate does
// not chain to the PEM roots caCrt at now.
func (w secretWriter) deleteUnchained(ctx context.Context, key types.NamespacedName, caCrt []byte, now time.Time, act func(cluster, object, action string, expires *time.Time)) error {
	cur, err := lookupSecret(ctx, w.remote, key, "workload cluster")
	if err != nil || cur == nil {
		return err
	}
	roots, err := pki.DecodeCertificates(caCrt)
	if err != nil {
		return err
	}
	m, _ := relaysecret.Decode(relaysecret.Client, cur.Data, "")
	if m.Cert != nil {
		if _, err := pki.VerifyChain(m.Cert, m.Chain, roots, pki.RoleClient, now); err == nil {
			return nil
		}
	}
	object := "secret " + key.String()
	if w.dryRun.sends() {
		if err := w.remote.Delete(ctx, cur, w.dryRun.deleteOptions()...); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("workload cluster: failed to delete %s, whose certificate does not chain to the new root: %w", object, err)
		}
	}
	act("workload", object, "deleted (its certificate does not chain to the new root; the agent bootstraps with the fresh token)", nil)
	return nil
}

// getSecret reads a secret that must exist; fix says how to make it.
func getSecret(ctx context.Context, c client.Client, key types.NamespacedName, side, fix string) (*corev1.Secret, error) {
	s, err := lookupSecret(ctx, c, key, side+" cluster")
	if err == nil && s == nil {
		err = fmt.Errorf("%s secret %s not found: %s", side, key, fix)
	}
	return s, err
}

// ensureNamespace creates namespace name unless it exists, and says
// whether it did (or, in a server dry run, would).
func ensureNamespace(ctx context.Context, c client.Client, name string, dryRun DryRun) (bool, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	err := c.Create(ctx, ns, dryRun.createOptions()...)
	switch {
	case apierrors.IsAlreadyExists(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("workload cluster: failed to create namespace %s: %w", name, err)
	}
	return true, nil
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
