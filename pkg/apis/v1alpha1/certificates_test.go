package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLiveClientCertificates(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	cert := func(serial string, issued time.Time, notAfter time.Time) *CertificateSummary {
		return &CertificateSummary{Serial: serial, NotBefore: metav1.NewTime(issued), NotAfter: metav1.NewTime(notAfter), RootSHA256: "r-" + serial}
	}
	newest := cert("2", now.Add(-time.Minute), now.Add(time.Hour))
	inUse := cert("1", now.Add(-time.Hour), now.Add(time.Hour))
	expired := cert("0", now.Add(-2*time.Hour), now)
	before := metav1.NewTime(now.Add(-30 * time.Minute))
	for _, tc := range []struct {
		name string
		kc   KubernetesCluster
		want []string
	}{
		{"none recorded", KubernetesCluster{}, nil},
		{"the newest alone", KubernetesCluster{Status: KubernetesClusterStatus{ClientCertificate: newest}}, []string{"2"}},
		{"the newest and an older one a replica's streams presented", KubernetesCluster{Status: KubernetesClusterStatus{ClientCertificate: newest,
			Replicas: []ReplicaStatus{{Replica: "a", StreamCertificate: inUse}, {Replica: "b", StreamCertificate: newest}, {Replica: "c"}}}}, []string{"2", "1"}},
		{"a replica's newest is the one in use while it holds streams and names no other", KubernetesCluster{Status: KubernetesClusterStatus{ClientCertificate: newest,
			Replicas: []ReplicaStatus{{Replica: "a", PushStreams: 1, ClientCertificate: inUse}, {Replica: "b", ClientCertificate: expired}}}}, []string{"2", "1"}},
		{"a replica without streams holds nothing", KubernetesCluster{Status: KubernetesClusterStatus{ClientCertificate: newest,
			Replicas: []ReplicaStatus{{Replica: "a", ClientCertificate: inUse}}}}, []string{"2"}},
		{"an expired one is not live", KubernetesCluster{Status: KubernetesClusterStatus{ClientCertificate: newest,
			Replicas: []ReplicaStatus{{Replica: "a", StreamCertificate: expired}}}}, []string{"2"}},
		{"a certificate issued before the revocation's time is not live", KubernetesCluster{Spec: KubernetesClusterSpec{Revocation: &Revocation{IssuedBefore: &before}},
			Status: KubernetesClusterStatus{ClientCertificate: newest, Replicas: []ReplicaStatus{{Replica: "a", StreamCertificate: inUse}}}}, []string{"2"}},
		{"a revoked serial is not live", KubernetesCluster{Spec: KubernetesClusterSpec{Revocation: &Revocation{Serials: []string{"2"}}},
			Status: KubernetesClusterStatus{ClientCertificate: newest, Replicas: []ReplicaStatus{{Replica: "a", StreamCertificate: inUse}}}}, []string{"1"}},
		{"the issue time recorded, not NotBefore, is judged", KubernetesCluster{Spec: KubernetesClusterSpec{Revocation: &Revocation{IssuedBefore: &before}},
			Status: KubernetesClusterStatus{ClientCertificate: &CertificateSummary{Serial: "5", NotBefore: metav1.NewTime(now.Add(-time.Hour)),
				IssuedAt: &metav1.Time{Time: now.Add(-time.Minute)}, NotAfter: metav1.NewTime(now.Add(time.Hour))}}}, []string{"5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range tc.kc.LiveClientCertificates(now) {
				got = append(got, c.Serial)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("live %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("live %v, want %v", got, tc.want)
				}
			}
		})
	}
}
