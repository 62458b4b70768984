// Package selfcert is relay-webhook's self-managed serving certificate: a
// CA and a serving certificate kept in one secret, the CA bundle patched
// into the webhook's own configurations, and both rotated before they
// expire without a failed admission.
//
// Every replica runs it. Writes are create-only or updates on the version
// read, so replicas starting or rotating at once converge on one secret:
// the loser of a conflict adopts what the winner wrote. A new CA is first
// published in caBundle beside the old one; the serving certificate moves
// to it only on a later pass that finds it already published, so the API
// server never meets a certificate it cannot verify.
package selfcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// Default lifetimes of the webhook's own certificates, which it renews
// itself (see Options.RotationRatio).
const (
	// DefaultCALifetime is the lifetime of a webhook CA: one year.
	DefaultCALifetime = 365 * 24 * time.Hour
	// DefaultServingLifetime is the lifetime of a serving certificate: 90
	// days, never beyond its CA's.
	DefaultServingLifetime = 90 * 24 * time.Hour
)

// Options wire a Manager.
type Options struct {
	Client                                         client.Client
	Namespace, SecretName, ServiceName             string
	ValidatingConfiguration, MutatingConfiguration string
	// ExtraDNSNames and IPAddresses are added to the serving certificate;
	// each name must be a DNS-1123 name.
	ExtraDNSNames []string
	IPAddresses   []net.IP
	// CALifetime defaults to DefaultCALifetime, ServingLifetime to
	// DefaultServingLifetime.
	CALifetime, ServingLifetime time.Duration
	// RotationRatio is the fraction of a lifetime left when it is renewed;
	// a third by default.
	RotationRatio float64
	// Resync is how often the secret and the configurations are checked;
	// one minute by default.
	Resync time.Duration
	Now    func() time.Time
	Log    logr.Logger
}

// Manager keeps the serving certificate; see the package comment.
type Manager struct {
	o       Options
	current atomic.Pointer[material]
	// published is set once the configurations carry the current bundle.
	published atomic.Bool
	problem   atomic.Pointer[string]
}

// New checks o, including the serving certificate's names, and returns a
// Manager; Ensure loads or makes the secret.
func New(o Options) (*Manager, error) {
	var missing []string
	for name, v := range map[string]string{"client": fmt.Sprint(o.Client != nil), "namespace": o.Namespace, "secret name": o.SecretName, "service name": o.ServiceName} {
		if v == "" || v == "false" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("serving certificate options lack %v", missing)
	}
	if err := checkServingNames(&o); err != nil {
		return nil, err
	}
	if o.CALifetime == 0 {
		o.CALifetime = DefaultCALifetime
	}
	if o.ServingLifetime == 0 {
		o.ServingLifetime = DefaultServingLifetime
	}
	if o.RotationRatio == 0 {
		o.RotationRatio = 1.0 / 3
	}
	if o.Resync == 0 {
		o.Resync = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Manager{o: o}, nil
}

// GetCertificate serves the current certificate to every new handshake.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	mat := m.current.Load()
	if mat == nil {
		return nil, errors.New("no serving certificate loaded yet")
	}
	return mat.tls, nil
}

// CABundle returns the CAs the API server must trust, newest first.
func (m *Manager) CABundle() []byte {
	if mat := m.current.Load(); mat != nil {
		return mat.bundle()
	}
	return nil
}

// Certificates returns the serving certificate the webhook serves now and
// the CA of the bundle that signed it, nil before one is loaded.
func (m *Manager) Certificates() (serving, ca *x509.Certificate) {
	mat := m.current.Load()
	if mat == nil {
		return nil, nil
	}
	for _, c := range mat.cas() {
		if mat.serving.Cert.CheckSignatureFrom(c) == nil {
			return mat.serving.Cert, c
		}
	}
	return mat.serving.Cert, nil
}

// Ready is nil once a certificate is loaded and caBundle published.
func (m *Manager) Ready() error {
	if p := m.problem.Load(); p != nil {
		return errors.New(*p)
	}
	if m.current.Load() == nil {
		return errors.New("no serving certificate yet")
	}
	if !m.published.Load() {
		return errors.New("caBundle not yet in the webhook configurations")
	}
	return nil
}

// NeedLeaderElection is false: every replica serves and keeps its
// certificate current.
func (m *Manager) NeedLeaderElection() bool { return false }

// Ensure loads the secret, making it when absent, and rotates what is due.
func (m *Manager) Ensure(ctx context.Context) error {
	return m.step(ctx)
}

// pendingRetry is the pass interval while caBundle is not yet published or
// a pass failed.
const pendingRetry = 2 * time.Second

// Start runs a pass every Resync until ctx ends.
func (m *Manager) Start(ctx context.Context) error {
	for {
		err := m.step(ctx)
		// Until the bundle is published (the configurations may be applied
		// after the webhook starts), or after a failure, look again soon.
		wait := m.o.Resync
		if err != nil || !m.published.Load() {
			wait = min(wait, pendingRetry)
		}
		if err != nil && ctx.Err() == nil {
			m.o.Log.Error(err, "serving certificate pass failed; retrying", "in", wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// step is one pass: adopt the stored secret (or make it), publish the
// bundle, rotate the CA or the serving certificate when due.
func (m *Manager) step(ctx context.Context) error {
	now := m.o.Now()
	sec, mat, err := m.load(ctx, now)
	if err != nil {
		return err
	}
	m.current.Store(mat)
	wasPublished, err := m.publish(ctx, mat.bundle())
	if err != nil {
		return err
	}
	next := m.rotate(mat, wasPublished, now)
	if next == nil {
		return nil
	}
	if err := m.write(ctx, sec, next); err != nil {
		if apierrors.IsConflict(err) {
			return nil // another replica rotated; the next pass adopts it
		}
		return err
	}
	m.current.Store(next)
	_, err = m.publish(ctx, next.bundle())
	return err
}

// rotate returns the next material when something is due, or nil.
func (m *Manager) rotate(mat *material, published bool, now time.Time) *material {
	next := newMaterial(mat.ca, unexpired(mat.retired, now), mat.serving)
	// Dropping CAs that expired is a change: nothing they signed verifies.
	changed := len(next.retired) != len(mat.retired)
	if due(next.ca.Cert, m.o.RotationRatio, now) {
		ca, err := newCA(&m.o, now)
		if err != nil {
			m.o.Log.Error(err, "failed to make a new webhook CA")
			return nil
		}
		m.o.Log.Info("rotating the webhook CA; the serving certificate follows once the new CA is published", "expires", next.ca.Cert.NotAfter)
		next = newMaterial(ca, append([]*x509.Certificate{next.ca.Cert}, next.retired...), next.serving)
		changed, published = true, false
	}
	if (!next.signedByNewest() && published) || (next.signedByNewest() && due(next.serving.Cert, m.o.RotationRatio, now)) {
		serving, err := newServing(&m.o, next.ca, now)
		if err != nil {
			m.o.Log.Error(err, "failed to issue a serving certificate")
			return nil
		}
		m.o.Log.Info("rotated the webhook serving certificate", "expires", serving.Cert.NotAfter)
		next, changed = newMaterial(next.ca, next.retired, serving), true
	}
	if !changed {
		return nil
	}
	return next
}

// unexpired returns the CAs of cas still valid at now, in order.
func unexpired(cas []*x509.Certificate, now time.Time) []*x509.Certificate {
	var live []*x509.Certificate
	for _, ca := range cas {
		if now.Before(ca.NotAfter) {
			live = append(live, ca)
		}
	}
	return live
}

// due reports whether cert has less than ratio of its lifetime left.
func due(cert *x509.Certificate, ratio float64, now time.Time) bool {
	in, err := pki.InRotationWindow(cert, ratio, now)
	return err != nil || in
}

// load reads the secret, creating it when absent. A secret that does not
// decode is replaced when it is ours, and reported otherwise.
func (m *Manager) load(ctx context.Context, now time.Time) (*corev1.Secret, *material, error) {
	key := types.NamespacedName{Namespace: m.o.Namespace, Name: m.o.SecretName}
	var sec corev1.Secret
	err := m.o.Client.Get(ctx, key, &sec)
	if apierrors.IsNotFound(err) {
		mat, err := m.fresh(now)
		if err != nil {
			return nil, nil, err
		}
		created, err := m.create(ctx, mat)
		if apierrors.IsAlreadyExists(err) {
			return m.load(ctx, now) // another replica made it first
		}
		return created, mat, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read secret %s: %w", key, err)
	}
	mat, err := decode(&sec)
	if err == nil {
		m.problem.Store(nil)
		return &sec, mat, nil
	}
	if sec.Annotations[meshv1alpha1.ManagedByAnnotation] != "relay-webhook" {
		msg := fmt.Sprintf("secret %s does not hold a usable certificate (%v) and is not ours to replace: delete it and relay-webhook makes a new one", key, err)
		m.problem.Store(&msg)
		return nil, nil, errors.New(msg)
	}
	m.o.Log.Info("replacing the unusable webhook certificate secret", "secret", key.String(), "problem", err.Error())
	mat, err = m.fresh(now)
	if err != nil {
		return nil, nil, err
	}
	if err := m.write(ctx, &sec, mat); err != nil {
		return nil, nil, err
	}
	m.problem.Store(nil)
	return &sec, mat, nil
}

// fresh makes a new CA and a serving certificate issued from it.
func (m *Manager) fresh(now time.Time) (*material, error) {
	ca, err := newCA(&m.o, now)
	if err != nil {
		return nil, err
	}
	serving, err := newServing(&m.o, ca, now)
	if err != nil {
		return nil, err
	}
	return newMaterial(ca, nil, serving), nil
}

func (m *Manager) create(ctx context.Context, mat *material) (*corev1.Secret, error) {
	data, err := mat.data()
	if err != nil {
		return nil, err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: m.o.Namespace, Name: m.o.SecretName,
			Annotations: map[string]string{meshv1alpha1.ManagedByAnnotation: "relay-webhook"}},
		Type: corev1.SecretTypeTLS,
		Data: data,
	}
	if err := m.o.Client.Create(ctx, sec); err != nil {
		return nil, err
	}
	m.o.Log.Info("created the webhook's CA and serving certificate", "secret", client.ObjectKeyFromObject(sec).String())
	return sec, nil
}

// write updates sec (at the version read) to hold mat.
func (m *Manager) write(ctx context.Context, sec *corev1.Secret, mat *material) error {
	data, err := mat.data()
	if err != nil {
		return err
	}
	sec.Data = data
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	sec.Annotations[meshv1alpha1.ManagedByAnnotation] = "relay-webhook"
	if err := m.o.Client.Update(ctx, sec); err != nil {
		return fmt.Errorf("failed to update secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return nil
}

// publish puts bundle into every webhook of both configurations and
// reports whether they all carried it already.
func (m *Manager) publish(ctx context.Context, bundle []byte) (already bool, err error) {
	already = true
	found := true
	if name := m.o.ValidatingConfiguration; name != "" {
		var vwc admissionregistrationv1.ValidatingWebhookConfiguration
		had, ok, err := m.patch(ctx, name, &vwc, func() []*[]byte {
			var out []*[]byte
			for i := range vwc.Webhooks {
				out = append(out, &vwc.Webhooks[i].ClientConfig.CABundle)
			}
			return out
		}, bundle)
		if err != nil {
			return false, err
		}
		already, found = already && had, found && ok
	}
	if name := m.o.MutatingConfiguration; name != "" {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		had, ok, err := m.patch(ctx, name, &mwc, func() []*[]byte {
			var out []*[]byte
			for i := range mwc.Webhooks {
				out = append(out, &mwc.Webhooks[i].ClientConfig.CABundle)
			}
			return out
		}, bundle)
		if err != nil {
			return false, err
		}
		already, found = already && had, found && ok
	}
	m.published.Store(found)
	return already, nil
}

// patch sets every caBundle of the configuration obj named name to bundle.
// It reports whether they carried it already, and whether the
// configuration exists: one that does not yet is waited for.
func (m *Manager) patch(ctx context.Context, name string, obj client.Object, bundles func() []*[]byte, bundle []byte) (had, found bool, err error) {
	if err := m.o.Client.Get(ctx, types.NamespacedName{Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			m.o.Log.Info("webhook configuration not found yet; caBundle will be set once it exists", "configuration", name)
			return false, false, nil
		}
		return false, false, fmt.Errorf("failed to read webhook configuration %s: %w", name, err)
	}
	before := obj.DeepCopyObject().(client.Object)
	had = true
	for _, b := range bundles() {
		if !bytes.Equal(*b, bundle) {
			*b, had = bundle, false
		}
	}
	if had {
		return true, true, nil
	}
	if err := m.o.Client.Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) {
			return false, true, nil
		}
		return false, true, fmt.Errorf("failed to patch caBundle into %s: %w", name, err)
	}
	m.o.Log.Info("published caBundle", "configuration", name)
	return false, true, nil
}
