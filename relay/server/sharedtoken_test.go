package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
)

// TestTheSharedTokenYieldsToClusterTokensAndToItsSecret runs a relay
// server on envtest and bootstraps over real TLS: the shared identity
// token may not bootstrap a cluster that has a token of its own, a broken
// record answers as a wrong token does, and deleting or breaking the
// token's secret turns the shared token off at once, without a restart.
func TestTheSharedTokenYieldsToClusterTokensAndToItsSecret(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", fastSigning)
	rc := f.dial(nil)
	for _, c := range []string{"cluster-1", "cluster-2", "cluster-3"} {
		f.register(c)
	}
	shared := f.token()

	t.Run("the shared token cannot bootstrap a cluster whose own token is pending", func(t *testing.T) {
		own := f.issueToken("cluster-1", time.Now(), time.Hour)
		_, err := f.tryBootstrap(rc, "cluster-1", shared)
		wantStatus(t, err, codes.Unauthenticated, "cluster cluster-1 has a bootstrap token of its own, so the shared identity token (gloo-mesh/relay-identity-token-secret) may not bootstrap it")
		wantStatus(t, err, codes.Unauthenticated, "relayctl register cluster-1")
		if _, ok := bootstraptoken.Bootstrapped(f.annotations("cluster-1")); ok {
			t.Fatal("the refused shared token marked cluster-1 bootstrapped")
		}
		if _, err := f.tryBootstrap(rc, "cluster-1", own); err != nil {
			t.Errorf("cluster-1's own token after the shared one was refused: %v", err)
		}
	})
	t.Run("nor one whose own token expired unused", func(t *testing.T) {
		f.issueToken("cluster-2", time.Now().Add(-2*time.Hour), time.Hour)
		_, err := f.tryBootstrap(rc, "cluster-2", shared)
		wantStatus(t, err, codes.Unauthenticated, "cluster cluster-2 has a bootstrap token of its own")
	})
	t.Run("a wrong token for a cluster with a broken record gets the answer an unregistered cluster gets", func(t *testing.T) {
		key := types.NamespacedName{Namespace: f.cfg.Namespace, Name: "cluster-3"}
		testenv.Eventually(t, "break cluster-3's token record", 10*time.Second, func() error {
			var kc meshv1alpha1.KubernetesCluster
			if err := f.cluster.Client.Get(t.Context(), key, &kc); err != nil {
				return err
			}
			kc.Annotations = map[string]string{meshv1alpha1.BootstrapTokenHashAnnotation: "not-a-hash"}
			return f.cluster.Client.Update(t.Context(), &kc)
		})
		f.eventually("the broken record reaches the server's cache", func() error {
			var kc meshv1alpha1.KubernetesCluster
			if err := f.srv.svc.reader.Get(t.Context(), key, &kc); err != nil {
				return err
			}
			if kc.Annotations[meshv1alpha1.BootstrapTokenHashAnnotation] != "not-a-hash" {
				return status.Error(codes.Unknown, "not yet")
			}
			return nil
		})
		_, registered := f.tryBootstrap(rc, "cluster-3", "wrong-token")
		_, unregistered := f.tryBootstrap(rc, "cluster-9", "wrong-token")
		got := strings.ReplaceAll(status.Convert(registered).Message(), "cluster-3", "NAME")
		want := strings.ReplaceAll(status.Convert(unregistered).Message(), "cluster-9", "NAME")
		if status.Code(registered) != status.Code(unregistered) || got != want {
			t.Errorf("a registered cluster with a broken record answers\n  %v\nand an unregistered one\n  %v\nso the answer tells them apart", registered, unregistered)
		}
	})

	tokenKey := types.NamespacedName{Namespace: f.cfg.Namespace, Name: f.cfg.TokenSecret.Name}
	waitShared := func(t *testing.T, want string) {
		t.Helper()
		testenv.Eventually(t, "the server's shared token is "+map[bool]string{true: "unset", false: "the secret's"}[want == ""], 30*time.Second, func() error {
			got := ""
			if tok := f.srv.svc.keys.token.Load(); tok != nil {
				got = string(*tok)
			}
			if got != want {
				return status.Errorf(codes.Unknown, "the server holds %d bytes of token", len(got))
			}
			return nil
		})
	}
	t.Run("deleting the token's secret turns the shared token off without a restart", func(t *testing.T) {
		if err := f.cluster.Client.Delete(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tokenKey.Namespace, Name: tokenKey.Name}}); err != nil {
			t.Fatal(err)
		}
		waitShared(t, "")
		f.register("cluster-4")
		_, err := f.tryBootstrap(rc, "cluster-4", shared)
		wantStatus(t, err, codes.Unauthenticated, "the bootstrap token is not valid for cluster cluster-4")
	})
	t.Run("a new token secret turns it on again, and a broken one off", func(t *testing.T) {
		fresh, err := bootstraptoken.New()
		if err != nil {
			t.Fatal(err)
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tokenKey.Namespace, Name: tokenKey.Name}, Data: map[string][]byte{f.cfg.TokenSecret.Key: []byte(fresh)}}
		if err := f.cluster.Client.Create(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		waitShared(t, fresh)
		s.Data = map[string][]byte{"not-the-key": []byte(fresh)}
		if err := f.cluster.Client.Update(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		waitShared(t, "")
		_, err = f.tryBootstrap(rc, "cluster-4", fresh)
		wantStatus(t, err, codes.Unauthenticated, "the bootstrap token is not valid for cluster cluster-4")
	})
}
