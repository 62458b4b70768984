package server

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func TestDerivePhaseResumesFromTheSecrets(t *testing.T) {
	now := time.Now()
	oldRoot, _ := pki.NewRootCA(pki.Options{CommonName: "old", TTL: time.Hour, Now: now})
	newRoot, _ := pki.NewRootCA(pki.Options{CommonName: "new", TTL: time.Hour, Now: now})
	oldInter, _ := oldRoot.NewIntermediateCA(pki.Options{CommonName: "i1", TTL: time.Hour, Now: now})
	newInter, _ := newRoot.NewIntermediateCA(pki.Options{CommonName: "i2", TTL: time.Hour, Now: now})
	secret := func(signer *pki.Certified, bundle ...*pki.Certified) *corev1.Secret {
		var pem []byte
		for _, r := range bundle {
			pem = append(pem, r.CertPEM()...)
		}
		keyPEM, _ := signer.KeyPEM()
		return &corev1.Secret{Data: map[string][]byte{"tls.crt": signer.CertPEM(), "tls.key": keyPEM, "ca.crt": pem}}
	}
	signing := func(inter *pki.Certified) *corev1.Secret {
		keyPEM, _ := inter.KeyPEM()
		return &corev1.Secret{Data: map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": keyPEM, "ca.crt": inter.CAPEM()}}
	}
	for _, tc := range []struct {
		name     string
		root     *corev1.Secret
		inter    *pki.Certified
		recorded meshv1alpha1.RotationPhase
		want     meshv1alpha1.RotationPhase
	}{
		{"one root", secret(oldRoot, oldRoot), oldInter, "", meshv1alpha1.PhaseStable},
		{"the new root signs, the intermediate is under the old one", secret(newRoot, oldRoot, newRoot), oldInter, meshv1alpha1.PhaseStable, meshv1alpha1.PhasePrepare},
		{"the intermediate moved, the old root is still in the bundle", secret(newRoot, oldRoot, newRoot), newInter, meshv1alpha1.PhasePrepare, meshv1alpha1.PhaseActivate},
		{"the old root left after Activate", secret(newRoot, newRoot), newInter, meshv1alpha1.PhaseActivate, meshv1alpha1.PhaseRetire},
		{"the old root left, Retire recorded", secret(newRoot, newRoot), newInter, meshv1alpha1.PhaseRetire, meshv1alpha1.PhaseRetire},
		{"the status was lost during Prepare", secret(newRoot, oldRoot, newRoot), oldInter, "", meshv1alpha1.PhasePrepare},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := decodeCA(tc.root, signing(tc.inter), nil)
			if len(st.problems) > 0 {
				t.Fatalf("decode: %v", st.problems)
			}
			if got := derivePhase(st, tc.recorded); got != tc.want {
				t.Errorf("phase %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRenewAtCountsTheLifetimeFromTheTimeOfIssue(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	ttl := time.Hour
	root, _ := pki.NewRootCA(pki.Options{CommonName: "r", TTL: ttl, Now: now, Backdate: generatedBackdate(ttl)})
	at := renewAt(root.Cert, 0.35)
	want := now.Add(ttl - time.Duration(0.35*float64(ttl)))
	if d := at.Sub(want); d < -time.Second || d > time.Second {
		t.Errorf("renewAt %s, want %s (35%% of the lifetime left, counted from the time of issue)", at, want)
	}
	if !renewAt(root.Cert, 0.9).After(now) {
		t.Errorf("with 90%% of the lifetime left as the renewal point, the certificate is due as soon as it is issued")
	}
}
