package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// maxNamedClusters bounds how many clusters a root removal denial names.
const maxNamedClusters = 5

// fingerprintPrefix is how many hex digits of a root's SHA-256 a message
// shows.
const fingerprintPrefix = 12

// The root guard sees the fleet. On the management cluster (a webhook
// without --cluster), relay-root-tls-secret's ca.crt is the trust bundle
// every agent verifies the server with, and the roots the clusters' client
// certificates chain to. An update that takes a root out of ca.crt, or a
// delete of the secret, while a live (unexpired) client certificate of a
// registered cluster still chains to that root is denied: relay-server
// records the root of each cluster's newest client certificate in the
// KubernetesCluster's status.clientCertificate.rootSHA256. The denial
// names the root, the clusters still holding it with their certificates'
// expiry, and meshrelay.dev/allow-root-removal, which admits it anyway.
//
// checkChainsKept sees only the certificates stored in this cluster; this
// sees the client certificates stored in every workload cluster, which the
// management cluster knows only through the KubernetesClusters' status.

// guardsRoots reports whether sec is the one the root guard checks: the
// management cluster's relay-root-tls-secret.
func (s *secrets) guardsRoots(sec *corev1.Secret) bool {
	return s.cfg.Cluster == "" && client.ObjectKeyFromObject(sec) == s.names().Root
}

// checkRootsKept denies taking a root that still anchors a live client
// certificate of the fleet out of the management cluster's root secret:
// old is the stored secret, after its ca.crt after the update (nil for a
// delete), and annotations the object the override is read from (the new
// one on update, the stored one on delete). An error is a failure to list
// the KubernetesClusters, which the caller returns as an internal error.
func (s *secrets) checkRootsKept(ctx context.Context, p *problems, old *corev1.Secret, after []byte, annotations map[string]string, deleting bool) error {
	before, err := pki.DecodeCertificates(old.Data[relaysecret.KeyCACert])
	if err != nil {
		return nil
	}
	kept, _ := pki.DecodeCertificates(after)
	removed := removedRoots(before, kept)
	if len(removed) == 0 {
		return nil
	}
	override := annotations[meshv1alpha1.AllowRootRemovalAnnotation] == "true"
	clusters, err := s.clusters(ctx)
	if err != nil {
		// Fail closed: the list is what tells a removal that strands
		// agents from a safe one, so without it nothing is removed unless
		// the person at the terminal says so with the annotation.
		if override {
			p.warn("%s: admitted by %s=true without checking the fleet: %v", old.Name, meshv1alpha1.AllowRootRemovalAnnotation, err)
			return nil
		}
		return fmt.Errorf("%w: retry, or annotate the secret %s=true to remove the root unchecked", err, meshv1alpha1.AllowRootRemovalAnnotation)
	}
	now := s.now()
	what := "this update removes"
	if deleting {
		what = "deleting the secret removes"
	}
	for _, r := range removed {
		holders := anchoredBy(r, clusters, now)
		if len(holders) == 0 {
			continue
		}
		if override {
			p.warn("%s: admitted by %s=true: root %s still anchors the live client certificates of %s; their agents cannot connect until they bootstrap again (relayctl register)",
				old.Name, meshv1alpha1.AllowRootRemovalAnnotation, describeRoot(r), describeHolders(holders))
			continue
		}
		p.deny(relaysecret.DataPath(relaysecret.KeyCACert),
			"%s root %s while the live client certificates of %s still chain to it: keep it in ca.crt until they are renewed under the new root (relayctl rotate status lists the clusters pending), or annotate the secret %s=true to remove it anyway, and those agents cannot connect until they bootstrap again",
			what, describeRoot(r), describeHolders(holders), meshv1alpha1.AllowRootRemovalAnnotation)
	}
	if n := unrecorded(clusters, now); n > 0 {
		p.warn("%s: %d cluster(s) hold a live client certificate whose root relay-server has not recorded (status.clientCertificate.rootSHA256 is empty): whether it chains to the removed root was not checked", old.Name, n)
	}
	return nil
}

// clusters lists the KubernetesClusters of the relay namespace. Where the
// KubernetesCluster API is not served there is no fleet, so no cluster.
func (s *secrets) clusters(ctx context.Context) ([]meshv1alpha1.KubernetesCluster, error) {
	var list meshv1alpha1.KubernetesClusterList
	err := s.reader.List(ctx, &list, client.InNamespace(s.cfg.Namespace))
	if meta.IsNoMatchError(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list the KubernetesClusters of %s, which say whether a live client certificate still chains to the root this removes: %w", s.cfg.Namespace, err)
	}
	return list.Items, nil
}

// removedRoots returns the roots of before that after no longer holds. A
// root replaced by one with the same subject and key (re-issued to extend
// it) is not removed: what chains to the one chains to the other.
func removedRoots(before, after []*x509.Certificate) []*x509.Certificate {
	var removed []*x509.Certificate
	for _, r := range before {
		if !slices.ContainsFunc(after, func(a *x509.Certificate) bool {
			return bytes.Equal(a.RawSubject, r.RawSubject) && bytes.Equal(a.RawSubjectPublicKeyInfo, r.RawSubjectPublicKeyInfo)
		}) {
			removed = append(removed, r)
		}
	}
	return removed
}

// holder is a cluster whose live client certificate chains to a root.
type holder struct {
	cluster  string
	notAfter time.Time
}

// anchoredBy returns the clusters with a live client certificate, by
// their status, that chains to root, by name: the newest, or one their
// streams presented (LiveClientCertificates). A holder's expiry is the
// latest of its certificates under root.
func anchoredBy(root *x509.Certificate, clusters []meshv1alpha1.KubernetesCluster, now time.Time) []holder {
	fp := pki.Fingerprint(root)
	var out []holder
	for _, kc := range clusters {
		var h *holder
		for _, cc := range kc.LiveClientCertificates(now) {
			if !strings.EqualFold(cc.RootSHA256, fp) {
				continue
			}
			if h == nil {
				h = &holder{cluster: kc.Name}
			}
			if cc.NotAfter.After(h.notAfter) {
				h.notAfter = cc.NotAfter.Time
			}
		}
		if h != nil {
			out = append(out, *h)
		}
	}
	slices.SortFunc(out, func(a, b holder) int { return strings.Compare(a.cluster, b.cluster) })
	return out
}

// unrecorded counts the clusters with a live client certificate whose
// root is not recorded.
func unrecorded(clusters []meshv1alpha1.KubernetesCluster, now time.Time) int {
	n := 0
	for _, kc := range clusters {
		if slices.ContainsFunc(kc.LiveClientCertificates(now), func(cc *meshv1alpha1.CertificateSummary) bool { return cc.RootSHA256 == "" }) {
			n++
		}
	}
	return n
}

// describeRoot names a root by common name and fingerprint prefix.
func describeRoot(r *x509.Certificate) string {
	return fmt.Sprintf("%q (sha256 %s…)", r.Subject.CommonName, pki.Fingerprint(r)[:fingerprintPrefix])
}

// describeHolders names up to maxNamedClusters clusters with their
// certificates' expiry, and how many more there are.
func describeHolders(hs []holder) string {
	var parts []string
	for i, h := range hs {
		if i == maxNamedClusters {
			parts = append(parts, fmt.Sprintf("and %d more", len(hs)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%s (expires %s)", h.cluster, h.notAfter.UTC().Format(time.RFC3339)))
	}
	n := "1 cluster"
	if len(hs) > 1 {
		n = fmt.Sprintf("%d clusters", len(hs))
	}
	return n + ": " + strings.Join(parts, ", ")
}
