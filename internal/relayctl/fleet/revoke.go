package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// RevokeOptions say what Revoke refuses.
type RevokeOptions struct {
	// Name is the workload cluster's name, its KubernetesCluster's.
	Name string
	// Namespace holds the KubernetesCluster.
	Namespace string
	// Serials, when set, revoke only the certificates with these serial
	// numbers (hexadecimal, with or without colons, any case); otherwise
	// every certificate issued until now is revoked.
	Serials []string
	// Now is the time of the revocation; zero means time.Now().
	Now time.Time
	// DryRun: DryRunClient computes the revocation and writes nothing;
	// DryRunServer sends it for the API server to check, not to keep.
	DryRun DryRun
}

// Revoked is what Revoke wrote to the KubernetesCluster.
type Revoked struct {
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	UID       string `json:"uid"`
	// IssuedBefore is spec.revocation.issuedBefore after the revocation.
	IssuedBefore *metav1.Time `json:"issuedBefore,omitempty"`
	// Added are the serials this revocation added; Serials all those listed.
	Added   []string `json:"added,omitempty"`
	Serials []string `json:"serials,omitempty"`
	// DryRun is client or server when nothing was written.
	DryRun DryRun `json:"dryRun,omitempty"`
}

// Revoke writes a revocation into the cluster's KubernetesCluster on the
// management cluster: without serials, spec.revocation.issuedBefore becomes
// the next whole second after now (a certificate's times hold whole
// seconds, so one issued within the current second is revoked too), never
// earlier than it was; with serials, they join spec.revocation.serials.
// Every relay-server replica then refuses those certificates at the
// handshake and at Renew and closes their streams. The write is an update
// on the version read, retried on conflict, so that concurrent revocations
// add up.
func Revoke(ctx context.Context, mgmt client.Client, o RevokeOptions) (*Revoked, error) {
	if err := pki.CheckDNSLabel(o.Name); err != nil {
		return nil, fmt.Errorf("cluster name %q: %w", o.Name, err)
	}
	serials := make([]string, 0, len(o.Serials))
	for _, s := range o.Serials {
		n, err := NormalizeSerial(s)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(serials, n) {
			serials = append(serials, n)
		}
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	cutoff := metav1.NewTime(now.Truncate(time.Second).Add(time.Second))
	key := types.NamespacedName{Namespace: o.Namespace, Name: o.Name}
	var out *Revoked
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var kc v1alpha1.KubernetesCluster
		if err := mgmt.Get(ctx, key, &kc); apierrors.IsNotFound(err) {
			return fmt.Errorf("KubernetesCluster %s not found on the management cluster: nothing to revoke (check the name, --namespace and --context)", key)
		} else if err != nil {
			return fmt.Errorf("management cluster: failed to read KubernetesCluster %s: %w", key, err)
		}
		rev := kc.Spec.Revocation
		if rev == nil {
			rev = &v1alpha1.Revocation{}
			kc.Spec.Revocation = rev
		}
		out = &Revoked{Cluster: kc.Name, Namespace: kc.Namespace, UID: string(kc.UID), DryRun: o.DryRun}
		if len(serials) == 0 {
			if rev.IssuedBefore == nil || rev.IssuedBefore.Before(&cutoff) {
				rev.IssuedBefore = &cutoff
			}
		}
		for _, s := range serials {
			if !slices.Contains(rev.Serials, s) {
				rev.Serials = append(rev.Serials, s)
				out.Added = append(out.Added, s)
			}
		}
		if len(rev.Serials) > v1alpha1.MaxRevokedSerials {
			return fmt.Errorf("KubernetesCluster %s would list %d revoked serials, more than %d: revoke the whole cluster instead (relayctl revoke %s, without --serial)",
				key, len(rev.Serials), v1alpha1.MaxRevokedSerials, o.Name)
		}
		out.IssuedBefore, out.Serials = rev.IssuedBefore, rev.Serials
		if !o.DryRun.sends() {
			return nil
		}
		if err := mgmt.Update(ctx, &kc, o.DryRun.updateOptions()...); err != nil {
			if apierrors.IsConflict(err) {
				return err
			}
			return fmt.Errorf("management cluster: failed to write the revocation to KubernetesCluster %s: %w", key, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// NormalizeSerial returns a certificate serial number as
// spec.revocation.serials holds it, lowercase hexadecimal without leading
// zeros, from the forms tools print it in: openssl's "0A:1B:…", Go's
// "a1b…", with or without a 0x prefix.
func NormalizeSerial(s string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(s))
	n = strings.TrimPrefix(n, "0x")
	n = strings.ReplaceAll(n, ":", "")
	n = strings.TrimLeft(n, "0")
	if n == "" || len(n) > 40 || strings.Trim(n, "0123456789abcdef") != "" {
		return "", fmt.Errorf("serial %q is not a certificate serial number: give it in hexadecimal, as openssl x509 -noout -serial prints it (at most 20 bytes, not zero)", s)
	}
	return n, nil
}
