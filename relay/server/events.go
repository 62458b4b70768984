package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// Event reasons on a KubernetesCluster (events.k8s.io/v1, reporting
// controller meshrelay.dev/relay-server).
const (
	EventBootstrapped        = "Bootstrapped"
	EventRenewed             = "Renewed"
	EventRefused             = "Refused"
	EventEvicted             = "Evicted"
	EventCertificateExpiring = "CertificateExpiring"
)

// Refusal events of one cluster are bounded: anyone holding the cluster's
// expired or revoked certificate can cause them, and every refusal is
// already counted in the metrics.
const (
	refusalEventEvery = 10 * time.Second
	refusalEventBurst = 3
)

// clusterEvents records Events on KubernetesClusters: what happened to a
// cluster's certificates and streams, on the object kubectl describe shows.
// A nil *clusterEvents records nothing (tests that build a service alone).
type clusterEvents struct {
	rec     events.EventRecorder
	replica string
	mu      sync.Mutex
	// refusals bounds refusal Events per registered cluster, by UID so
	// that a deleted cluster's bucket is not reused by its successor.
	refusals map[types.UID]*rate.Limiter
}

func newEvents(rec events.EventRecorder, replica string) *clusterEvents {
	return &clusterEvents{rec: rec, replica: replica, refusals: map[types.UID]*rate.Limiter{}}
}

// regarding is what an Event of kc is about: the object with only what
// identifies it, so that a cached object is never held by the recorder.
func regarding(kc *meshv1alpha1.KubernetesCluster) *meshv1alpha1.KubernetesCluster {
	return &meshv1alpha1.KubernetesCluster{
		TypeMeta: metav1.TypeMeta{APIVersion: meshv1alpha1.GroupVersion.String(), Kind: "KubernetesCluster"},
		// No resourceVersion: status writes change it all the time, and
		// it would keep like Events from being counted as one series.
		ObjectMeta: metav1.ObjectMeta{Namespace: kc.Namespace, Name: kc.Name, UID: kc.UID},
	}
}

// issued records a certificate signed for kc by call (bootstrap or renew).
func (e *clusterEvents) issued(kc *meshv1alpha1.KubernetesCluster, call, serial string, notAfter time.Time, peer string) {
	if e == nil || kc == nil {
		return
	}
	reason, action := EventRenewed, "Renew"
	if call == callBootstrap {
		reason, action = EventBootstrapped, "Bootstrap"
	}
	e.rec.Eventf(regarding(kc), nil, corev1.EventTypeNormal, reason, action,
		"replica %s signed client certificate %s (expires %s) for a %s from %s", e.replica, serial, notAfter.UTC().Format(time.RFC3339), call, peer)
}

// refused records a refusal of kc's call (bootstrap, renew, handshake,
// stream) for reason, at a bounded rate per cluster.
func (e *clusterEvents) refused(kc *meshv1alpha1.KubernetesCluster, call, reason, peer string, err error) {
	if e == nil || kc == nil || !e.allowRefusal(kc.UID) {
		return
	}
	e.rec.Eventf(regarding(kc), nil, corev1.EventTypeWarning, EventRefused, refusalAction(call),
		"replica %s refused a %s from %s (%s): %v", e.replica, call, peer, reason, err)
}

// evicted records that kc's streams were closed for reason.
func (e *clusterEvents) evicted(kc *meshv1alpha1.KubernetesCluster, streams int, reason string, err error) {
	if e == nil || kc == nil {
		return
	}
	e.rec.Eventf(regarding(kc), nil, corev1.EventTypeWarning, EventEvicted, "Evict",
		"replica %s closed %d stream(s) (%s): %v", e.replica, streams, reason, err)
}

// expiring records that kc's client certificate has less than a third of
// its lifetime left: the agent should have renewed it by now.
func (e *clusterEvents) expiring(kc *meshv1alpha1.KubernetesCluster, cert *meshv1alpha1.CertificateSummary, now time.Time) {
	if e == nil || kc == nil || cert == nil {
		return
	}
	e.rec.Eventf(regarding(kc), nil, corev1.EventTypeWarning, EventCertificateExpiring, "Check",
		"client certificate %s expires %s (in %s), with less than a third of its lifetime left: is relay-agent running and connected on cluster %s? relayctl check says why",
		cert.Serial, cert.NotAfter.UTC().Format(time.RFC3339), cert.NotAfter.Sub(now).Round(time.Second), kc.Name)
}

func (e *clusterEvents) allowRefusal(uid types.UID) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.refusals[uid]
	if l == nil {
		if len(e.refusals) >= maxRefusalBuckets {
			clear(e.refusals)
		}
		l = rate.NewLimiter(rate.Every(refusalEventEvery), refusalEventBurst)
		e.refusals[uid] = l
	}
	return l.Allow()
}

// maxRefusalBuckets bounds the refusal buckets; past it they start again.
const maxRefusalBuckets = 16384

func refusalAction(call string) string {
	switch call {
	case callBootstrap:
		return "Bootstrap"
	case "renew":
		return "Renew"
	case "handshake":
		return "Handshake"
	}
	return "Stream"
}
