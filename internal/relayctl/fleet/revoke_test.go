package fleet_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

func TestNormalizeSerialReadsTheFormsToolsPrint(t *testing.T) {
	for in, want := range map[string]string{
		"3f0a":                  "3f0a",
		"3F:0A":                 "3f0a",
		"00:3F:0A":              "3f0a",
		"0x3F0A":                "3f0a",
		" 3f0a\n":               "3f0a",
		strings.Repeat("f", 40): strings.Repeat("f", 40),
	} {
		if got, err := fleet.NormalizeSerial(in); err != nil || got != want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "00:00", "3g", "-1", strings.Repeat("f", 41)} {
		if got, err := fleet.NormalizeSerial(in); err == nil || !strings.Contains(err.Error(), "openssl x509 -noout -serial") {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want an error saying how to get the serial", in, got, err)
		}
	}
}

func TestRevokeWritesTheRevocationTheServerReads(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ctx := t.Context()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gloo-mesh"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &v1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "cluster-1"}}); err != nil {
		t.Fatal(err)
	}
	stored := func() *v1alpha1.Revocation {
		t.Helper()
		var kc v1alpha1.KubernetesCluster
		if err := c.Get(ctx, types.NamespacedName{Namespace: "gloo-mesh", Name: "cluster-1"}, &kc); err != nil {
			t.Fatal(err)
		}
		return kc.Spec.Revocation
	}
	now := time.Date(2026, 6, 1, 12, 0, 0, 500e6, time.UTC)

	t.Run("an unknown cluster is an error that names where it looked", func(t *testing.T) {
		_, err := fleet.Revoke(ctx, c, fleet.RevokeOptions{Name: "cluster-9", Namespace: "gloo-mesh", Now: now})
		if err == nil || !strings.Contains(err.Error(), "KubernetesCluster gloo-mesh/cluster-9 not found") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("a dry run writes nothing: client only computes, server has the API server judge the write", func(t *testing.T) {
		policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "frozen-revocations"},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionregistrationv1.Fail),
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{v1alpha1.GroupVersion.Group}, APIVersions: []string{"*"}, Resources: []string{"kubernetesclusters"}},
					},
				}}},
				Validations: []admissionregistrationv1.Validation{{Expression: "!has(object.spec.revocation)", Message: "revocations are frozen"}},
			},
		}
		binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "frozen-revocations"},
			Spec:       admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name, ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
		}
		for _, o := range []client.Object{policy, binding} {
			if err := c.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		server := fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh", Now: now, DryRun: fleet.DryRunServer}
		testenv.Eventually(t, "the policy refuses the server dry run", 30*time.Second, func() error {
			if _, err := fleet.Revoke(ctx, c, server); err == nil || !strings.Contains(err.Error(), "revocations are frozen") {
				return fmt.Errorf("Revoke --dry-run=server under a policy freezing revocations: %v, want its refusal", err)
			}
			return nil
		})
		onClient := server
		onClient.DryRun = fleet.DryRunClient
		got, err := fleet.Revoke(ctx, c, onClient)
		want := time.Date(2026, 6, 1, 12, 0, 1, 0, time.UTC)
		if err != nil || got.DryRun != fleet.DryRunClient || !got.IssuedBefore.Time.Equal(want) {
			t.Errorf("client dry run: %+v, %v; want issuedBefore %s, sent nowhere", got, err, want)
		}
		for _, o := range []client.Object{binding, policy} {
			if err := c.Delete(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, "the server dry run passes without the policy", 30*time.Second, func() error {
			got, err = fleet.Revoke(ctx, c, server)
			return err
		})
		if got.DryRun != fleet.DryRunServer || !got.IssuedBefore.Time.Equal(want) {
			t.Errorf("server dry run: %+v; want issuedBefore %s", got, want)
		}
		if rev := stored(); rev != nil {
			t.Errorf("a dry run stored the revocation %+v", rev)
		}
	})
	t.Run("the whole cluster: issuedBefore is the next second, and never moves back", func(t *testing.T) {
		got, err := fleet.Revoke(ctx, c, fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		want := time.Date(2026, 6, 1, 12, 0, 1, 0, time.UTC)
		if !got.IssuedBefore.Time.Equal(want) || !stored().IssuedBefore.Time.Equal(want) {
			t.Errorf("issuedBefore %s (stored %s), want %s", got.IssuedBefore, stored().IssuedBefore, want)
		}
		if _, err := fleet.Revoke(ctx, c, fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh", Now: now.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if got := stored().IssuedBefore.Time; !got.Equal(want) {
			t.Errorf("an earlier revocation moved issuedBefore back to %s", got)
		}
	})
	t.Run("serials join the list once each and leave issuedBefore alone", func(t *testing.T) {
		got, err := fleet.Revoke(ctx, c, fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh", Serials: []string{"0A:1B", "a1b", "ff"}})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got.Added, ",") != "a1b,ff" || strings.Join(stored().Serials, ",") != "a1b,ff" {
			t.Errorf("added %v, stored %v; want a1b,ff", got.Added, stored().Serials)
		}
		got, err = fleet.Revoke(ctx, c, fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh", Serials: []string{"FF", "1"}})
		if err != nil || strings.Join(got.Added, ",") != "1" || strings.Join(got.Serials, ",") != "a1b,ff,1" {
			t.Errorf("second revocation: added %v, serials %v, %v; want 1 added to a1b,ff", got.Added, got.Serials, err)
		}
		if !stored().IssuedBefore.Time.Equal(time.Date(2026, 6, 1, 12, 0, 1, 0, time.UTC)) {
			t.Errorf("serials changed issuedBefore to %s", stored().IssuedBefore)
		}
	})
	t.Run("past the bound on serials, revoke says to revoke the whole cluster", func(t *testing.T) {
		var many []string
		for i := range v1alpha1.MaxRevokedSerials {
			many = append(many, fmt.Sprintf("%x", 0x1000+i))
		}
		_, err := fleet.Revoke(ctx, c, fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh", Serials: many})
		if err == nil || !strings.Contains(err.Error(), "revoke the whole cluster instead (relayctl revoke cluster-1, without --serial)") {
			t.Errorf("got %v", err)
		}
		if n := len(stored().Serials); n != 3 {
			t.Errorf("%d serials stored after the refused revocation, want the 3 from before", n)
		}
	})
}
