package rotation

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// Conditions relay-server writes on its RelayTrust.
const (
	// ConditionReady: every certificate is valid and renewed on time.
	ConditionReady = "Ready"
	// ConditionProgressing: a rotation is under way.
	ConditionProgressing = "Progressing"
)

// NotFoundError is the error of Get for a namespace without a RelayTrust.
type NotFoundError struct {
	Key types.NamespacedName
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("RelayTrust %s not found on the management cluster: relay-server makes it when it starts; "+
		"check that relay-server of this release runs there (kubectl get pods -n %s), or -n and --context", e.Key, e.Key.Namespace)
}

// Get reads relay-server's RelayTrust in namespace. A RelayTrust that does
// not exist is a *NotFoundError.
func Get(ctx context.Context, c client.Reader, namespace string) (*v1alpha1.RelayTrust, error) {
	key := types.NamespacedName{Namespace: namespace, Name: v1alpha1.RelayTrustName}
	var rt v1alpha1.RelayTrust
	if err := c.Get(ctx, key, &rt); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &NotFoundError{Key: key}
		}
		return nil, readError(key, err)
	}
	return &rt, nil
}

// Problems returns what is wrong in rt's status at now, each in one
// sentence: a Ready condition that is not True (relay-server found a
// certificate expired or its renewal overdue), or none at all, and every
// certificate listed that has expired, which a relay-server that stopped
// writing status cannot say. None means ready.
func Problems(rt *v1alpha1.RelayTrust, now time.Time) []string {
	var out []string
	ready := meta.FindStatusCondition(rt.Status.Conditions, ConditionReady)
	switch {
	case ready == nil:
		out = append(out, fmt.Sprintf("relay-server has not said whether its certificates are valid (no %s condition): "+
			"check that relay-server of this release runs (kubectl get pods -n %s) and its log", ConditionReady, rt.Namespace))
	case ready.Status != metav1.ConditionTrue:
		out = append(out, fmt.Sprintf("%s is %s (%s): %s", ConditionReady, ready.Status, ready.Reason, ready.Message))
	}
	for _, tc := range Listed(&rt.Status) {
		if !now.Before(tc.NotAfter.Time) {
			out = append(out, fmt.Sprintf("the %s certificate in secret %s (sha256 %s) expired at %s", tc.Role, tc.Secret, ShortSHA(tc.SHA256), formatTime(tc.NotAfter.Time)))
		}
	}
	return out
}

// ListedCertificate is one certificate of a RelayTrust status, with its
// role.
type ListedCertificate struct {
	// Role is root, incoming, outgoing, intermediate or server.
	Role string
	v1alpha1.TrustCertificate
}

// Listed returns the certificates status lists, in the order relayctl
// shows them: root, incoming, outgoing, intermediate, server.
func Listed(status *v1alpha1.RelayTrustStatus) []ListedCertificate {
	var out []ListedCertificate
	for _, c := range []struct {
		role string
		cert *v1alpha1.TrustCertificate
	}{
		{"root", status.Root}, {"incoming", status.Incoming}, {"outgoing", status.Outgoing},
		{"intermediate", status.Intermediate}, {"server", status.Server},
	} {
		if c.cert != nil {
			out = append(out, ListedCertificate{Role: c.role, TrustCertificate: *c.cert})
		}
	}
	return out
}

// ShortSHA is the first 12 hex digits of a SHA-256, as relayctl prints it.
func ShortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
