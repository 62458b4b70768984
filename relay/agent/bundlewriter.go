package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/meshrelay/meshrelay/internal/backoff"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/pkg/trustbundle"
)

// The writer's retry delays after a failure to store a bundle.
const (
	bundleRetryInitial = time.Second
	bundleRetryLimit   = time.Minute
)

// bundleWriterOptions are what the bundle writer needs.
type bundleWriterOptions struct {
	Bundles *trustBundles
	// RootSecret is relay-root-tls-secret, whose ca.crt the writer patches;
	// Namespace names the ClusterTrustBundle (v1alpha1.TrustBundleName).
	RootSecret types.NamespacedName
	Namespace  string
	// Client writes both, and does not read ClusterTrustBundles from a
	// cache.
	Client client.Client
	Clock  clock.Clock
	// Random draws the retry backoff's jitter, a fraction in [0, 1).
	Random func() float64
	// Updates counts the bundles stored (persisted) and the failed
	// attempts (failed).
	Updates *prometheus.CounterVec
	Log     logr.Logger
}

// bundleWriter stores each bundle the server pushes into the agent's own
// cluster, so that a restart and every replica keep it: ca.crt of
// relay-root-tls-secret (a merge patch that keeps the other keys; the
// secret is created when absent) and the ClusterTrustBundle of the relay
// install, where the API is served. It runs on the leader only, retries a
// failure with backoff, and acknowledges what it stored.
type bundleWriter struct {
	opts bundleWriterOptions
	// notServed is set once the ClusterTrustBundle API was found missing,
	// which is logged once.
	notServed bool
}

func newBundleWriter(opts bundleWriterOptions) *bundleWriter { return &bundleWriter{opts: opts} }

var _ manager.LeaderElectionRunnable = (*bundleWriter)(nil)

// NeedLeaderElection makes the manager run the writer on the leader only,
// the replica that holds the rotator's Lease.
func (w *bundleWriter) NeedLeaderElection() bool { return true }

// Start stores the latest bundle whenever one comes, until ctx ends.
func (w *bundleWriter) Start(ctx context.Context) error {
	o := &w.opts
	log := o.Log.WithName("trust-bundle")
	retry := backoff.New(bundleRetryInitial, bundleRetryLimit, o.Random)
	written := ""
	for {
		var again <-chan time.Time
		if b := o.Bundles.pending(); b != nil && b.sha != written {
			published, err := w.write(ctx, b)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				o.Updates.WithLabelValues("failed").Inc()
				d := retry.Step()
				log.Error(err, "failed to store the relay trust bundle in this cluster; retrying", "sha256", b.sha, "retryIn", d.Round(time.Millisecond))
				again = o.Clock.After(d)
			default:
				written = b.sha
				retry.Reset()
				o.Updates.WithLabelValues("persisted").Inc()
				log.Info("stored the relay trust bundle in this cluster", "sha256", b.sha, "roots", len(b.roots),
					"secret", o.RootSecret.String(), "clusterTrustBundle", published)
				o.Bundles.written(b.sha)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-o.Bundles.wake:
		case <-again:
		}
	}
}

// write stores b in the root secret and the ClusterTrustBundle, and
// reports whether the ClusterTrustBundle API is served.
func (w *bundleWriter) write(ctx context.Context, b *pushedBundle) (bool, error) {
	o := &w.opts
	if err := w.writeSecret(ctx, b.pem); err != nil {
		return false, err
	}
	published, err := trustbundle.Publish(ctx, o.Client, o.Namespace, b.pem)
	if err != nil {
		return false, fmt.Errorf("failed to publish ClusterTrustBundle %s: %w", v1alpha1.TrustBundleName(o.Namespace), err)
	}
	if !published && !w.notServed {
		w.notServed = true
		o.Log.WithName("trust-bundle").Info("this cluster does not serve the ClusterTrustBundle API (certificates.k8s.io/v1, Kubernetes 1.37): the relay trust bundle is kept in the root secret only",
			"secret", o.RootSecret.String())
	}
	return published, nil
}

// writeSecret sets ca.crt of the root secret to bundle with a merge patch,
// which needs no read of the secret and keeps its other keys, or creates
// the secret with ca.crt alone when it does not exist.
func (w *bundleWriter) writeSecret(ctx context.Context, bundle []byte) error {
	o := &w.opts
	patch, err := json.Marshal(map[string]any{"data": map[string][]byte{relaysecret.KeyCACert: bundle}})
	if err != nil {
		return err
	}
	key := o.RootSecret
	for range 2 {
		err := o.Client.Patch(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}, client.RawPatch(types.MergePatchType, patch))
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("failed to patch ca.crt of secret %s: %w", key, err)
		}
		err = o.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{relaysecret.KeyCACert: bundle},
		})
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("failed to create secret %s: %w", key, err)
		}
		// Created meanwhile: patch it.
	}
	return fmt.Errorf("secret %s was created and deleted while the agent wrote it", key)
}
