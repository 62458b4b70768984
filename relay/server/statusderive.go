package server

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// The leader's derivation of a KubernetesCluster's status from its
// replicas' entries: pure functions of the object, the live replicas and
// the time.

// thirdLeft is when a third of cert's lifetime is left.
func thirdLeft(cert *meshv1alpha1.CertificateSummary) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore.Time)
	return cert.NotAfter.Add(-life / 3)
}

// nextLook is when the leader looks at a cluster again without a change:
// when its certificate reaches a third of its lifetime left, or expires.
func nextLook(cert *meshv1alpha1.CertificateSummary, now time.Time) time.Duration {
	if cert == nil {
		return 0
	}
	for _, at := range []time.Time{thirdLeft(cert), cert.NotAfter.Time} {
		if at.After(now) {
			return min(at.Sub(now)+time.Second, time.Hour)
		}
	}
	return 0
}

// deriveStatus is kc's status as the leader derives it at now from the
// entries of replicas: the streams count only of the entries current says
// are of a live replica's current process.
func deriveStatus(kc *meshv1alpha1.KubernetesCluster, current func(meshv1alpha1.ReplicaStatus) bool, now time.Time) *meshv1alpha1.KubernetesClusterStatus {
	st := &meshv1alpha1.KubernetesClusterStatus{
		ObservedGeneration: kc.Generation,
		Replicas:           kc.Status.Replicas,
		Conditions:         slices.Clone(kc.Status.Conditions),
		ClientCertificate:  kc.Status.ClientCertificate,
		AgentVersion:       kc.Status.AgentVersion,
		LastSeen:           kc.Status.LastSeen,
		TrustBundleSHA256:  kc.Status.TrustBundleSHA256,
	}
	var holders []string
	var newestSeen *metav1.Time
	// The entry seen last comes last, so that of two certificates issued
	// in the same second, the one seen last is taken (newerCert).
	entries := slices.Clone(kc.Status.Replicas)
	slices.SortStableFunc(entries, func(a, b meshv1alpha1.ReplicaStatus) int {
		return seenTime(a).Compare(seenTime(b))
	})
	for _, r := range entries {
		if c := r.ClientCertificate; c != nil && newerCert(c, st.ClientCertificate) {
			st.ClientCertificate = c.DeepCopy()
		}
		if r.LastSeen != nil && (st.LastSeen == nil || r.LastSeen.After(st.LastSeen.Time)) {
			st.LastSeen = r.LastSeen.DeepCopy()
		}
		if r.LastSeen != nil && r.AgentVersion != "" && (newestSeen == nil || r.LastSeen.After(newestSeen.Time)) {
			newestSeen, st.AgentVersion = r.LastSeen, r.AgentVersion
		}
		// Entries come oldest seen first: the newest acknowledgement wins.
		if r.TrustBundleSHA256 != "" {
			st.TrustBundleSHA256 = r.TrustBundleSHA256
		}
		if r.PushStreams > 0 && r.PullStreams > 0 && current(r) {
			holders = append(holders, r.Replica)
		}
	}
	if c := st.ClientCertificate; c != nil {
		st.ClientCertificateNotAfter = c.NotAfter.DeepCopy()
	}
	slices.Sort(holders)
	st.ConnectedReplicas = joinBounded(holders, maxConnectedReplicas)
	meta.SetStatusCondition(&st.Conditions, registeredCondition(kc, st.ClientCertificate))
	meta.SetStatusCondition(&st.Conditions, connectedCondition(kc, holders, st.LastSeen))
	meta.SetStatusCondition(&st.Conditions, certificateCondition(kc, st.ClientCertificate, len(holders) > 0, now))
	for i := range st.Conditions {
		st.Conditions[i].ObservedGeneration = kc.Generation
	}
	return st
}

// ofEarlierProcess reports whether entry r was written by a process of its
// replica before the one that took the replica's Lease at acquired: a
// restarted container's previous process, whose streams ended with it. Its
// entry is left in place for a while (staleEntryGrace), for the agent coming
// back to write over it.
//
// startedAt and acquireTime are both a process's start, to the microsecond,
// from the replica's own clock. lastSeen would not do: it is to the second,
// so an agent the new process saw in the second it took the Lease could not
// be told from one the previous process saw in that second (one of the two
// would be judged wrongly), and it moves only when streams open or close, so
// a wrong judgement would stay. A replica's name is its pod's, so its
// processes ran one after the other on one node: each took the Lease later
// than the one before it by at least a container restart, far more than a
// synchronized clock steps. An entry that started after acquired is of a
// process that took the Lease since the leader last read it, and counts. An
// entry without startedAt is of a relay-server that does not record it, and
// is judged by the Lease alone, as before; so is every entry of a replica
// whose Lease has no acquireTime.
func ofEarlierProcess(r meshv1alpha1.ReplicaStatus, acquired time.Time) bool {
	return r.StartedAt != nil && !acquired.IsZero() && r.StartedAt.Time.Before(acquired)
}

func seenTime(r meshv1alpha1.ReplicaStatus) time.Time {
	if r.LastSeen == nil {
		return time.Time{}
	}
	return r.LastSeen.Time
}

// newerCert reports whether a is to replace b as the newest certificate:
// it is not older (validity times have a resolution of one second, so a
// certificate issued in the same second as b replaces it), and another.
func newerCert(a, b *meshv1alpha1.CertificateSummary) bool {
	if b == nil {
		return true
	}
	if a.Serial == b.Serial {
		// The same certificate, now with the fingerprints of its issuer
		// and root (recorded since a newer relay-server saw it).
		return b.RootSHA256 == "" && a.RootSHA256 != ""
	}
	return !a.NotBefore.Before(&b.NotBefore)
}

func registeredCondition(kc *meshv1alpha1.KubernetesCluster, cert *meshv1alpha1.CertificateSummary) metav1.Condition {
	c := metav1.Condition{Type: meshv1alpha1.ConditionRegistered, Status: metav1.ConditionTrue}
	token, tokenExpires := kc.Annotations[meshv1alpha1.BootstrapTokenHashAnnotation], kc.Annotations[meshv1alpha1.BootstrapTokenExpiresAnnotation]
	switch {
	case token != "":
		c.Reason = "AwaitingBootstrap"
		c.Message = fmt.Sprintf("a bootstrap token for %s is unused (it expires %s): the agent bootstraps with it; relayctl register %s issues a new one", kc.Name, tokenExpires, kc.Name)
	case cert != nil || kc.Annotations[meshv1alpha1.BootstrappedAnnotation] != "":
		c.Reason = "Bootstrapped"
		c.Message = fmt.Sprintf("%s has bootstrapped", kc.Name)
	default:
		c.Reason = "NoToken"
		c.Message = fmt.Sprintf("no bootstrap token and no client certificate seen yet: run relayctl register %s, or give the agent a client certificate", kc.Name)
	}
	return c
}

// maxConnectedReplicas bounds status.connectedReplicas.
const maxConnectedReplicas = 1024

// joinBounded joins names with commas, ending with "..." where the next
// name would pass max bytes.
func joinBounded(names []string, max int) string {
	var b strings.Builder
	for i, n := range names {
		sep := ""
		if i > 0 {
			sep = ","
		}
		if b.Len()+len(sep)+len(n) > max-len(",...") {
			b.WriteString(",...")
			break
		}
		b.WriteString(sep + n)
	}
	return b.String()
}

func connectedCondition(kc *meshv1alpha1.KubernetesCluster, holders []string, lastSeen *metav1.Time) metav1.Condition {
	if len(holders) > 0 {
		return metav1.Condition{Type: meshv1alpha1.ConditionConnected, Status: metav1.ConditionTrue, Reason: "StreamsOpen",
			Message: fmt.Sprintf("push and pull streams open on relay-server replica(s) %s", strings.Join(holders, ", "))}
	}
	msg := fmt.Sprintf("no relay-server replica holds both streams of %s: is relay-agent running there, and can it reach relay-server? relayctl check says why", kc.Name)
	if lastSeen != nil {
		msg = fmt.Sprintf("%s (last seen %s)", msg, lastSeen.UTC().Format(time.RFC3339))
	}
	return metav1.Condition{Type: meshv1alpha1.ConditionConnected, Status: metav1.ConditionFalse, Reason: "Disconnected", Message: msg}
}

func certificateCondition(kc *meshv1alpha1.KubernetesCluster, cert *meshv1alpha1.CertificateSummary, connected bool, now time.Time) metav1.Condition {
	c := metav1.Condition{Type: meshv1alpha1.ConditionCertificateValid, Status: metav1.ConditionFalse}
	fix := fmt.Sprintf("relayctl register %s issues a fresh bootstrap token, with which the agent gets a new certificate", kc.Name)
	switch {
	case cert == nil:
		c.Reason, c.Message = "Unknown", "no client certificate of this cluster issued or seen yet"
		c.Status = metav1.ConditionUnknown
	case !now.Before(cert.NotAfter.Time):
		c.Reason, c.Message = "Expired", fmt.Sprintf("client certificate %s expired at %s: %s", cert.Serial, cert.NotAfter.UTC().Format(time.RFC3339), fix)
	case kc.Spec.Revocation.Refuses(cert):
		c.Reason, c.Message = "Revoked", fmt.Sprintf("client certificate %s is revoked by spec.revocation: %s", cert.Serial, fix)
	case !now.Before(thirdLeft(cert)) && !connected:
		c.Status = metav1.ConditionTrue
		c.Reason, c.Message = "ExpiringSoon", fmt.Sprintf("client certificate %s expires %s with less than a third of its lifetime left, and the cluster is not connected to renew it", cert.Serial, cert.NotAfter.UTC().Format(time.RFC3339))
	default:
		c.Status = metav1.ConditionTrue
		c.Reason, c.Message = "Valid", fmt.Sprintf("client certificate %s expires %s", cert.Serial, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return c
}

// statusEqual reports whether the leader's fields of a and b agree, with
// condition transition times ignored only where status and reason agree.
func statusEqual(a, b *meshv1alpha1.KubernetesClusterStatus) bool {
	if a.ObservedGeneration != b.ObservedGeneration || a.AgentVersion != b.AgentVersion || a.ConnectedReplicas != b.ConnectedReplicas || a.TrustBundleSHA256 != b.TrustBundleSHA256 ||
		!timeEqual(a.LastSeen, b.LastSeen) || !timeEqual(a.ClientCertificateNotAfter, b.ClientCertificateNotAfter) ||
		!certEqual(a.ClientCertificate, b.ClientCertificate) || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for _, c := range b.Conditions {
		o := meta.FindStatusCondition(a.Conditions, c.Type)
		if o == nil || o.Status != c.Status || o.Reason != c.Reason || o.Message != c.Message || o.ObservedGeneration != c.ObservedGeneration {
			return false
		}
	}
	return true
}

func timeEqual(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

func certEqual(a, b *meshv1alpha1.CertificateSummary) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Serial == b.Serial && a.NotBefore.Equal(&b.NotBefore) && a.NotAfter.Equal(&b.NotAfter) && a.Issuer == b.Issuer && timeEqual(a.IssuedAt, b.IssuedAt) &&
		a.IssuerSHA256 == b.IssuerSHA256 && a.RootSHA256 == b.RootSHA256
}
