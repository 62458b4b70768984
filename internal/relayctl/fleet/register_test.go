package fleet

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func TestRegisterIssuesEachRunAFreshTokenKeptOnTheManagementClusterOnlyAsAHash(t *testing.T) {
	fx := newRegistrationFixture(t, time.Hour)
	mgmt, remote, srv, ag := fx.mgmt, fx.remote, fx.srv, fx.ag
	ctx := t.Context()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	opts := RegisterOptions{Name: "cluster-1", Server: &srv, Agent: &ag, Now: now}
	workloadToken := func() string {
		var s corev1.Secret
		if err := remote.Get(ctx, types.NamespacedName{Namespace: ag.Namespace, Name: ag.TokenSecret.Name}, &s); err != nil {
			t.Fatalf("workload token secret: %v", err)
		}
		return string(s.Data[ag.TokenSecret.Key])
	}
	record := func() (*bootstraptoken.Record, map[string]string) {
		var kc v1alpha1.KubernetesCluster
		if err := mgmt.Get(ctx, types.NamespacedName{Namespace: srv.Namespace, Name: "cluster-1"}, &kc); err != nil {
			t.Fatalf("KubernetesCluster: %v", err)
		}
		rec, err := bootstraptoken.Read(kc.Annotations)
		if err != nil || rec == nil {
			t.Fatalf("token record %v, %v in %v", rec, err, kc.Annotations)
		}
		return rec, kc.Annotations
	}

	t.Run("a dry run changes nothing", func(t *testing.T) {
		dry := opts
		dry.DryRun = DryRunClient
		steps, err := Register(ctx, mgmt, remote, dry)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range steps {
			if !strings.HasPrefix(s.Action, "would be ") {
				t.Errorf("dry-run step %+v", s)
			}
		}
		var kc v1alpha1.KubernetesCluster
		if err := mgmt.Get(ctx, types.NamespacedName{Namespace: srv.Namespace, Name: "cluster-1"}, &kc); err == nil {
			t.Error("a dry run created the KubernetesCluster")
		}
	})

	t.Run("a server dry run is judged by the API servers and keeps nothing", func(t *testing.T) {
		dry := opts
		dry.DryRun = DryRunServer
		// A policy that refuses every new KubernetesCluster: only a request
		// the API server sees can be refused by it.
		policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "no-new-clusters"},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionregistrationv1.Fail),
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{v1alpha1.GroupVersion.Group}, APIVersions: []string{"*"}, Resources: []string{"kubernetesclusters"}},
					},
				}}},
				Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: "no new clusters here"}},
			},
		}
		binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "no-new-clusters"},
			Spec:       admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name, ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
		}
		for _, o := range []client.Object{policy, binding} {
			if err := mgmt.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, "the policy refuses the server dry run", 30*time.Second, func() error {
			if _, err := Register(ctx, mgmt, remote, dry); err == nil || !strings.Contains(err.Error(), "no new clusters here") {
				return fmt.Errorf("Register --dry-run=server under a policy refusing new clusters: %v, want the policy's refusal", err)
			}
			return nil
		})
		onClient := opts
		onClient.DryRun = DryRunClient
		if _, err := Register(ctx, mgmt, remote, onClient); err != nil {
			t.Errorf("a client dry run sends nothing, so the policy cannot refuse it: %v", err)
		}
		for _, o := range []client.Object{binding, policy} {
			if err := mgmt.Delete(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		var steps []Step
		testenv.Eventually(t, "the server dry run passes without the policy", 30*time.Second, func() error {
			var err error
			steps, err = Register(ctx, mgmt, remote, dry)
			return err
		})
		for _, s := range steps {
			if !strings.HasSuffix(s.Action, " (server dry run)") {
				t.Errorf("server dry-run step %+v", s)
			}
		}
		if err := mgmt.Get(ctx, types.NamespacedName{Namespace: srv.Namespace, Name: "cluster-1"}, &v1alpha1.KubernetesCluster{}); !apierrors.IsNotFound(err) {
			t.Errorf("after a server dry run the KubernetesCluster: %v, want not found", err)
		}
		if err := remote.Get(ctx, types.NamespacedName{Name: ag.Namespace}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
			t.Errorf("after a server dry run the workload namespace: %v, want not found", err)
		}
	})

	var first string
	t.Run("the first run creates the KubernetesCluster with the token's hash and expiry, and the token on the workload cluster", func(t *testing.T) {
		steps, err := Register(ctx, mgmt, remote, opts)
		if err != nil {
			t.Fatal(err)
		}
		first = workloadToken()
		rec, ann := record()
		if !rec.Matches(first) || !rec.Expires.Equal(now.Add(time.Hour)) {
			t.Errorf("record %+v does not match the workload token or expire one hour after issue", rec)
		}
		for k, v := range ann {
			if strings.Contains(v, first) {
				t.Errorf("annotation %s holds the token itself", k)
			}
		}
		var tokenStep *Step
		for i := range steps {
			if strings.Contains(steps[i].Object, ag.TokenSecret.Name) {
				tokenStep = &steps[i]
			}
		}
		if tokenStep == nil || tokenStep.Action != "created" || tokenStep.TokenExpires == nil || !tokenStep.TokenExpires.Equal(now.Add(time.Hour)) {
			t.Errorf("token step %+v, want created with its expiry", tokenStep)
		}
	})

	t.Run("running it again replaces the token and its record", func(t *testing.T) {
		again := opts
		again.TokenTTL = 10 * time.Minute
		if _, err := Register(ctx, mgmt, remote, again); err != nil {
			t.Fatal(err)
		}
		second := workloadToken()
		rec, _ := record()
		if second == first || rec.Matches(first) || !rec.Matches(second) || !rec.Expires.Equal(now.Add(10*time.Minute)) {
			t.Errorf("after a second run: token changed %v, record %+v", second != first, rec)
		}
	})

	t.Run("a lifetime out of bounds is refused before anything changes", func(t *testing.T) {
		before := workloadToken()
		bad := opts
		bad.TokenTTL = 8 * 24 * time.Hour
		if _, err := Register(ctx, mgmt, remote, bad); err == nil || !strings.Contains(err.Error(), "--token-ttl") {
			t.Errorf("Register with an 8-day token: %v, want an error naming --token-ttl", err)
		}
		if workloadToken() != before {
			t.Error("the refused run replaced the token")
		}
	})

	t.Run("a workload root from another management cluster is replaced only with --force", func(t *testing.T) {
		other, _ := pki.NewRootCA(pki.Options{CommonName: "other", TTL: time.Hour})
		var s corev1.Secret
		key := types.NamespacedName{Namespace: ag.Namespace, Name: ag.RootTLSSecret.Name}
		if err := remote.Get(ctx, key, &s); err != nil {
			t.Fatal(err)
		}
		s.Data["ca.crt"] = other.CertPEM()
		if err := remote.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
		before := workloadToken()
		if _, err := Register(ctx, mgmt, remote, opts); err == nil || !strings.Contains(err.Error(), "--force") {
			t.Errorf("Register over a different root: %v, want a refusal naming --force", err)
		}
		if workloadToken() != before {
			t.Error("the refused run replaced the token")
		}
		// The agent's certificate under the replaced root is of no use any
		// more, and would be left without a chain: --force deletes it.
		stale, _ := other.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour})
		keyPEM, _ := stale.KeyPEM()
		clientKey := types.NamespacedName{Namespace: ag.Namespace, Name: ag.ClientTLSSecret.Name}
		_ = remote.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clientKey.Namespace, Name: clientKey.Name}})
		if err := remote.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clientKey.Namespace, Name: clientKey.Name},
			Data: map[string][]byte{"tls.crt": stale.CertPEM(), "tls.key": keyPEM, "ca.crt": other.CertPEM()}}); err != nil {
			t.Fatal(err)
		}
		forced := opts
		forced.Force = true
		steps, err := Register(ctx, mgmt, remote, forced)
		if err != nil {
			t.Errorf("with --force: %v", err)
		}
		if err := remote.Get(ctx, clientKey, &corev1.Secret{}); err == nil {
			t.Errorf("the client secret under the replaced root is still there")
		}
		if !slices.ContainsFunc(steps, func(s Step) bool {
			return strings.Contains(s.Action, "deleted") && strings.Contains(s.Object, clientKey.Name)
		}) {
			t.Errorf("the steps do not say the client secret was deleted: %+v", steps)
		}
	})
}
