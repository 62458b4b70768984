package rotation

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// MaxReason bounds RotationRequest.Reason, as the RelayTrust CRD does.
const MaxReason = 256

// RequestOptions say which rotation Request asks for.
type RequestOptions struct {
	Certificate Certificate
	// Namespace is relay-server's, where its RelayTrust lives.
	Namespace string
	// Now skips the minimum times of a root rotation
	// (RotationRequest.Now), never its waits for the agents.
	Now bool
	// Reason is shown in relay-server's Events and log.
	Reason string
	// At is when the rotation is asked for; zero means time.Now().
	At time.Time
	// DryRun: DryRunClient reads and writes nothing; DryRunServer sends
	// the write for the API server to check, not to keep.
	DryRun fleet.DryRun
}

// Requested is the request Request wrote, and where the RelayTrust stood
// when it did.
type Requested struct {
	Certificate Certificate `json:"certificate"`
	Namespace   string      `json:"namespace"`
	Name        string      `json:"name"`
	// Action is created or patched, or what it would have been in a dry run.
	Action  string                   `json:"action"`
	Request v1alpha1.RotationRequest `json:"request"`
	DryRun  fleet.DryRun             `json:"dryRun,omitempty"`
	// Phase and PhaseSince are where a root rotation stood.
	Phase      v1alpha1.RotationPhase `json:"phase,omitempty"`
	PhaseSince *metav1.Time           `json:"phaseSince,omitempty"`
	// Rotations is how many rotations of the certificate status counted:
	// the rotation asked for is done when it counts more, in phase Stable.
	Rotations int64 `json:"rotations"`
	// Plan is what relay-server does, and waits for.
	Plan []Step `json:"plan"`
}

// Request asks relay-server for a rotation of o.Certificate: it sets the
// matching request of the RelayTrust's spec (spec.rotateRoot, ...) with a
// JSON merge patch, so that requests for other certificates, and
// relay-server's own writes, are left as they are; a RelayTrust that does
// not exist yet is created with the request. relay-server acts once on
// each requestedAt (status.observedRequests), which holds whole seconds:
// so that a request is never taken for the last one, made within the same
// second, its requestedAt is after every earlier request's.
func Request(ctx context.Context, c client.Client, o RequestOptions) (*Requested, error) {
	if len(o.Reason) > MaxReason {
		return nil, fmt.Errorf("--reason is %d bytes long, more than %d", len(o.Reason), MaxReason)
	}
	at := o.At
	if at.IsZero() {
		at = time.Now()
	}
	key := types.NamespacedName{Namespace: o.Namespace, Name: v1alpha1.RelayTrustName}
	var rt v1alpha1.RelayTrust
	exists := true
	if err := c.Get(ctx, key, &rt); apierrors.IsNotFound(err) {
		exists = false
	} else if err != nil {
		return nil, readError(key, err)
	}
	req := v1alpha1.RotationRequest{RequestedAt: metav1.NewTime(nextRequestTime(&rt, o.Certificate, at)), Now: o.Now, Reason: o.Reason}
	out := &Requested{Certificate: o.Certificate, Namespace: key.Namespace, Name: key.Name, Request: req, DryRun: o.DryRun, Plan: Plan(o.Certificate, o.Now)}
	if o.DryRun == fleet.DryRunClient {
		out.Action = "would be created"
		if exists {
			out.Action = "would be patched"
			out.observe(&rt)
		}
		return out, nil
	}

	patch, err := mergePatch(o.Certificate, req)
	if err != nil {
		return nil, err
	}
	var (
		patchOpts  []client.PatchOption
		createOpts []client.CreateOption
	)
	if o.DryRun == fleet.DryRunServer {
		patchOpts, createOpts = []client.PatchOption{client.DryRunAll}, []client.CreateOption{client.DryRunAll}
	}
	// relay-server creates the RelayTrust too, and it may be deleted
	// meanwhile: a create that loses to another patches what was made, a
	// patch that finds nothing creates.
	create := !exists
	for range 3 {
		rt = v1alpha1.RelayTrust{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		if create {
			*o.Certificate.requestField(&rt.Spec) = &req
			err := c.Create(ctx, &rt, createOpts...)
			if err == nil {
				out.Action = dryRunAction(o.DryRun, "created")
				out.observe(&rt)
				return out, nil
			}
			if !apierrors.IsAlreadyExists(err) {
				return nil, writeError(key, err)
			}
			create = false
			continue
		}
		err := c.Patch(ctx, &rt, client.RawPatch(types.MergePatchType, patch), patchOpts...)
		if err == nil {
			out.Action = dryRunAction(o.DryRun, "patched")
			out.observe(&rt)
			return out, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, writeError(key, err)
		}
		create = true
	}
	return nil, fmt.Errorf("management cluster: RelayTrust %s was deleted and created again while the request was written: run the command again", key)
}

// nextRequestTime is at in whole seconds, or the second after the latest
// request for c that rt holds or has acted on, when that is not earlier.
func nextRequestTime(rt *v1alpha1.RelayTrust, c Certificate, at time.Time) time.Time {
	next := at.Truncate(time.Second)
	for _, t := range []*metav1.Time{requestedAt(c.Request(&rt.Spec)), c.Observed(&rt.Status)} {
		if t != nil && !t.Time.Before(next) {
			next = t.Time.Truncate(time.Second).Add(time.Second)
		}
	}
	return next
}

func requestedAt(r *v1alpha1.RotationRequest) *metav1.Time {
	if r == nil {
		return nil
	}
	return &r.RequestedAt
}

// observe records where rt stood.
func (r *Requested) observe(rt *v1alpha1.RelayTrust) {
	r.Phase, r.PhaseSince = rt.Status.Phase, rt.Status.PhaseSince
	r.Rotations = r.Certificate.Rotations(&rt.Status)
}

// mergePatch is the JSON merge patch that sets c's request to req. A
// false Now and an empty Reason are sent as null, which removes them: a
// merge patch keeps the fields it does not name, and an earlier request's
// must not carry over.
func mergePatch(c Certificate, req v1alpha1.RotationRequest) ([]byte, error) {
	fields := map[string]any{"requestedAt": req.RequestedAt, "now": nil, "reason": nil}
	if req.Now {
		fields["now"] = true
	}
	if req.Reason != "" {
		fields["reason"] = req.Reason
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{c.SpecField(): fields}})
	if err != nil {
		return nil, fmt.Errorf("failed to build the rotation request: %w", err)
	}
	return patch, nil
}

func dryRunAction(d fleet.DryRun, action string) string {
	if d == fleet.DryRunServer {
		return action + " (server dry run)"
	}
	return action
}
