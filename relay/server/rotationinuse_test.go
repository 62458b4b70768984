package server

import (
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestRootRotationWaitsForTheCertificateInUse runs a root rotation with an
// agent that renews onto the new root but cannot store the certificate
// (its cluster's API server refuses the secret write, as with its webhook
// down), so it keeps its streams on the old root's certificate. The
// newest certificate issued to its cluster chains to the new root; the
// one in use does not. The old root must not leave the bundle while that
// certificate is in use: the server would end the agent's streams and
// refuse its handshakes, and with its bootstrap token spent the cluster
// could not come back without an operator. Once the agent stores a
// renewed certificate and moves its streams, the rotation completes, and
// neither agent saw a stream ended or a handshake refused.
func TestRootRotationWaitsForTheCertificateInUse(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", func(c *config.Server) {
		c.RootRotationOverlap = metav1.Duration{Duration: 3 * time.Second}
		c.ClientCertificateTTL = metav1.Duration{Duration: time.Hour}
	})
	healthy, stuck := newRotatingAgent(t, f, "cluster-1"), newRotatingAgent(t, f, "cluster-2")
	stuck.setStoreFails(true)
	f.eventually("RelayTrust reports Stable with both clusters acknowledging the bundle", func() error {
		rt := relayTrust(t, f)
		if rt.Status.Phase != meshv1alpha1.PhaseStable || rt.Status.Bundle == nil || rt.Status.Bundle.Acknowledged != 2 {
			return fmt.Errorf("status %+v", rt.Status)
		}
		return nil
	})
	oldRoot, _ := pki.DecodeCertificate(f.secret("relay-root-tls-secret").Data[relaysecret.KeyCACert])
	askRotation(t, f, "rotateRoot", false)

	// The rotation reaches Activate, the stuck agent renews onto the new
	// root (its cluster's newest certificate), and the rotation waits
	// for its cluster: the certificate in use still chains to the old root.
	testenv.Eventually(t, "the rotation waits in Activate for the stuck agent's cluster", 2*time.Minute, func() error {
		rt := relayTrust(t, f)
		if rt.Status.Phase != meshv1alpha1.PhaseActivate {
			return fmt.Errorf("phase %s, pending %v", rt.Status.Phase, rt.Status.Pending)
		}
		if stuck.renewals() == 0 {
			return fmt.Errorf("the stuck agent has not renewed yet; pending %v", rt.Status.Pending)
		}
		var kc meshv1alpha1.KubernetesCluster
		if err := f.cluster.Client.Get(t.Context(), types.NamespacedName{Namespace: f.cfg.Namespace, Name: "cluster-2"}, &kc); err != nil {
			return err
		}
		if c := kc.Status.ClientCertificate; c == nil || c.RootSHA256 == pki.Fingerprint(oldRoot) || c.RootSHA256 == "" {
			return fmt.Errorf("cluster-2's newest certificate %+v does not chain to the new root yet", c)
		}
		want := meshv1alpha1.PendingCluster{Cluster: "cluster-2", Reason: meshv1alpha1.PendingChainsToOldRoot}
		if !slices.Contains(rt.Status.Pending, want) {
			return fmt.Errorf("pending %v, want %v among them", rt.Status.Pending, want)
		}
		return nil
	})
	bundle, _ := pki.DecodeCertificates(f.secret("relay-root-tls-secret").Data[relaysecret.KeyCACert])
	if !slices.ContainsFunc(bundle, oldRoot.Equal) {
		t.Fatal("the old root left the bundle while a stream's certificate still chains to it")
	}
	stuck.probe()
	stuck.check(t)
	healthy.check(t)

	// The agent stores its next certificate and moves its streams.
	stuck.setStoreFails(false)
	stuck.renew()
	testenv.Eventually(t, "the root rotation completes", 2*time.Minute, func() error {
		rt := relayTrust(t, f)
		if rt.Status.Rotations.Root != 1 || rt.Status.Phase != meshv1alpha1.PhaseStable {
			return fmt.Errorf("phase %s, rotations %+v, pending %v", rt.Status.Phase, rt.Status.Rotations, rt.Status.Pending)
		}
		return nil
	})
	bundle, _ = pki.DecodeCertificates(f.secret("relay-root-tls-secret").Data[relaysecret.KeyCACert])
	if slices.ContainsFunc(bundle, oldRoot.Equal) {
		t.Error("the old root is still in the bundle after the rotation")
	}
	stuck.probe()
	healthy.probe()
	stuck.check(t)
	healthy.check(t)
}

// TestARevokedClusterDoesNotHoldARootRotation: a cluster whose client
// certificate came from the intermediate before the current one holds a
// root rotation in Prepare (Activate replaces that intermediate) while the
// certificate is live. Once the cluster is revoked the certificate is
// refused everywhere, and the rotation goes on: a revoked, compromised
// cluster cannot hold back the rotation meant to shut it out.
func TestARevokedClusterDoesNotHoldARootRotation(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", func(c *config.Server) {
		c.RootRotationOverlap = metav1.Duration{Duration: 3 * time.Second}
		c.ClientCertificateTTL = metav1.Duration{Duration: time.Hour}
	})
	f.register("cluster-1")
	f.bootstrap(f.dial(nil), "cluster-1", f.token())
	var kc meshv1alpha1.KubernetesCluster
	key := types.NamespacedName{Namespace: f.cfg.Namespace, Name: "cluster-1"}
	f.eventually("cluster-1's certificate is in its status", func() error {
		if err := f.cluster.Client.Get(t.Context(), key, &kc); err != nil {
			return err
		}
		if kc.Status.ClientCertificate == nil {
			return fmt.Errorf("no client certificate in status")
		}
		return nil
	})
	askRotation(t, f, "rotateIntermediate", true)
	f.eventually("the intermediate that issued cluster-1's certificate is kept as previous.crt", func() error {
		if _, ok := f.secret(f.cfg.SigningTLSSecret.Name).Data[relaysecret.KeyPreviousCACert]; !ok {
			return fmt.Errorf("no previous.crt")
		}
		return nil
	})
	// A later issuedBefore than the certificate's issue time: a second
	// on, since status times have a resolution of one second.
	testenv.Eventually(t, "cluster-1 is revoked", 30*time.Second, func() error {
		if err := f.cluster.Client.Get(t.Context(), key, &kc); err != nil {
			return err
		}
		cut := metav1.NewTime(time.Now().Add(time.Second).Truncate(time.Second))
		kc.Spec.Revocation = &meshv1alpha1.Revocation{IssuedBefore: &cut}
		return f.cluster.Client.Update(t.Context(), &kc)
	})
	askRotation(t, f, "rotateRoot", true)
	testenv.Eventually(t, "the root rotation completes", 2*time.Minute, func() error {
		rt := relayTrust(t, f)
		if rt.Status.Rotations.Root != 1 || rt.Status.Phase != meshv1alpha1.PhaseStable {
			return fmt.Errorf("phase %s, rotations %+v, pending %v", rt.Status.Phase, rt.Status.Rotations, rt.Status.Pending)
		}
		return nil
	})
}
