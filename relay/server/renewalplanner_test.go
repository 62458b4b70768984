package server

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// TestTheTrustBundleIsSentAgainOnlyToAnAgentThatHasNotAcknowledgedIt: an
// agent that acknowledged the bundle is left alone; one that has not gets
// it again bundleResend after it was last sent, not before. The
// acknowledgement is this replica's own record while it holds the
// cluster's push stream, and the cluster's status when it does not.
func TestTheTrustBundleIsSentAgainOnlyToAnAgentThatHasNotAcknowledgedIt(t *testing.T) {
	const ns, bundlePEM = "gloo-mesh", "-----BEGIN CERTIFICATE-----\nbundle\n-----END CERTIFICATE-----\n"
	bundle := sha256Hex([]byte(bundlePEM))
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	// Its status says cluster-2 acknowledged the bundle; cluster-3's says
	// nothing.
	reader := fake.NewClientBuilder().WithScheme(s).WithObjects(
		&meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cluster-2"}, Status: meshv1alpha1.KubernetesClusterStatus{TrustBundleSHA256: bundle}},
		&meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cluster-3"}},
	).Build()
	conns := newConnections()
	keys := &keyring{}
	pem := []byte(bundlePEM)
	keys.rootPEM.Store(&pem)
	p := &renewalPlanner{ns: ns, conns: conns, keys: keys, clusters: reader, bundleSent: map[string]time.Time{}}

	// cluster-1 holds push and pull here and acknowledged an older bundle;
	// cluster-2 and cluster-3 hold only a pull stream here.
	pull := map[string]*stream{}
	for _, c := range []string{"cluster-1", "cluster-2", "cluster-3"} {
		pull[c] = conns.open(c, pullStream, nil, nil)
	}
	conns.open("cluster-1", pushStream, nil, nil)
	conns.setTrustBundle("cluster-1", "older")

	sent := func(cluster string) bool {
		select {
		case in := <-pull[cluster].instructions:
			if tb, ok := in.Instruction.(*relayv1.Instruction_TrustBundle); !ok || string(tb.TrustBundle.CaCertificates) != bundlePEM {
				t.Fatalf("%s got %v, want the trust bundle", cluster, in)
			}
			return true
		default:
			return false
		}
	}
	start := time.Now()
	look := func(at time.Time) {
		for _, c := range []string{"cluster-1", "cluster-2", "cluster-3"} {
			p.resendBundle(c, p.acknowledged(t.Context(), c), bundle, at)
		}
	}
	look(start)
	look(start.Add(bundleResend - time.Second))
	for _, c := range []string{"cluster-1", "cluster-2", "cluster-3"} {
		if sent(c) {
			t.Errorf("%s was sent the bundle again before %s had passed", c, bundleResend)
		}
	}
	look(start.Add(bundleResend))
	for c, want := range map[string]bool{"cluster-1": true, "cluster-2": false, "cluster-3": true} {
		if got := sent(c); got != want {
			t.Errorf("%s sent the bundle again after %s: %v, want %v", c, bundleResend, got, want)
		}
	}

	// cluster-1's agent acknowledges on its push stream: no more resends.
	conns.setTrustBundle("cluster-1", bundle)
	look(start.Add(3 * bundleResend))
	if sent("cluster-1") {
		t.Error("cluster-1 was sent the bundle again after it acknowledged it")
	}
}
