package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/trustbundle"
)

// secretReader reads the agent's secrets: the secretStore.
type secretReader interface {
	read(ctx context.Context, cluster string, now time.Time) (*material, error)
}

// watcherOptions are what the watcher needs.
type watcherOptions struct {
	Secrets secretReader
	// ClientSecret names the client secret in the readiness message.
	ClientSecret types.NamespacedName
	Cluster      string
	// Insecure makes the agent ready without a client certificate.
	Insecure bool
	Provider *Provider
	Roots    *rootSet
	// Bundles learns the roots kept in the cluster, to acknowledge the
	// server's bundle once they are its roots; nil in tests without one.
	Bundles *trustBundles
	// NoRoots, when set, keeps the agent unready while it has no trust
	// anchor, and says where they come from (with a trust bundle folder).
	NoRoots error
	// Cert is set from the loaded certificate: its NotBefore, its
	// NotAfter, and its renewal time at GraceRatio.
	Cert       certGauges
	GraceRatio float64
	Clock      clock.PassiveClock
	Log        logr.Logger
}

// watcher reads the agent's secrets whenever they change, on every
// replica, and loads what it finds into the provider and the roots.
type watcher struct {
	opts watcherOptions
	// loading is held across a load's read and its setting of the
	// provider: the secret watch and the rotator load at once, and a load
	// that read the cache before the renewed certificate reached it must
	// not set the old certificate after another load set the new one.
	loading sync.Mutex
	ready   atomic.Bool
	// managed reports whether the client secret is managed elsewhere, or
	// holds a certificate of another issuer: the rotator leaves it alone.
	managed atomic.Bool
}

// newWatcher returns a watcher; load fills the provider and the roots.
func newWatcher(opts watcherOptions) *watcher { return &watcher{opts: opts} }

// load reads the relay secrets and loads the client certificate into the
// provider when it is usable: every replica's new handshakes then use it.
// It returns what it read, for the rotator.
func (w *watcher) load(ctx context.Context) (*material, error) {
	w.loading.Lock()
	defer w.loading.Unlock()
	o := &w.opts
	t, err := o.Secrets.read(ctx, o.Cluster, o.Clock.Now())
	if err != nil {
		o.Log.Error(err, "failed to read relay secrets")
		return nil, err
	}
	w.managed.Store(t.managed || t.foreign)
	if o.Roots.setLocal(t.local) {
		o.Log.Info("trust anchors changed", "local", len(t.local), "anchors", len(o.Roots.Get()))
	}
	if o.Bundles != nil {
		o.Bundles.observe(trustbundle.Fingerprint(t.persisted))
	}
	if t.client == nil || t.clientOK != nil {
		return t, nil
	}
	w.setGauges(t.client.Leaf, t.managed || t.foreign)
	if cur := o.Provider.Current(); cur != nil && cur.Leaf.Equal(t.client.Leaf) {
		return t, nil
	}
	o.Provider.Set(t.client)
	o.Log.Info("loaded client certificate", "serial", t.client.Leaf.SerialNumber.Text(16), "notAfter", t.client.Leaf.NotAfter,
		"managedElsewhere", t.managed, "issuedByRelay", !t.foreign)
	return t, nil
}

// setGauges sets the certificate gauges from leaf. The renewal time is
// the rotator's without jitter, which only brings a renewal earlier, so
// that every replica, not only the leader, reports when a renewal is
// overdue; it is 0 for a secret managed elsewhere or a certificate of
// another issuer, which the rotator does not renew.
func (w *watcher) setGauges(leaf *x509.Certificate, managed bool) {
	o := &w.opts
	o.Cert.NotBefore.Set(float64(leaf.NotBefore.Unix()))
	o.Cert.NotAfter.Set(float64(leaf.NotAfter.Unix()))
	renewal := 0.0
	if !managed {
		if at, err := pki.RenewalTime(leaf, o.GraceRatio, 0); err == nil {
			renewal = float64(at.Unix())
		}
	}
	o.Cert.Renewal.Set(renewal)
}

// markReady says the caches have synced and the secrets were read once.
func (w *watcher) markReady() { w.ready.Store(true) }

// readiness returns why the agent is not ready, or nil.
func (w *watcher) readiness() error {
	cert := w.opts.Provider.Current()
	switch {
	case !w.ready.Load():
		return errors.New("caches are syncing")
	case w.opts.NoRoots != nil && !w.opts.Insecure && len(w.opts.Roots.Get()) == 0:
		return w.opts.NoRoots
	case cert == nil && !w.opts.Insecure:
		return fmt.Errorf("no valid client certificate in secret %s yet", w.opts.ClientSecret)
	}
	return nil
}
