package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// DefaultPollInterval is how often Wait reads the RelayTrust.
const DefaultPollInterval = 2 * time.Second

// WaitOptions say which rotation Wait waits for.
type WaitOptions struct {
	Certificate Certificate
	Namespace   string
	// After is how many rotations of Certificate status counted when the
	// rotation was asked for (Requested.Rotations).
	After int64
	// RequestedAt is the request's (Requested.Request.RequestedAt): a
	// request relay-server acted on without rotating ends the wait with a
	// *DeclinedError. Zero waits without looking.
	RequestedAt metav1.Time
	// Interval between reads; zero means DefaultPollInterval.
	Interval time.Duration
	// Progress, when set, is called with the RelayTrust each time its
	// phase line (PhaseLine) changes.
	Progress func(*v1alpha1.RelayTrust)
}

// Done reports whether rt shows a rotation of c done after `after` were
// counted: status.rotations of c counts more, and the phase is Stable.
func Done(rt *v1alpha1.RelayTrust, c Certificate, after int64) bool {
	return c.Rotations(&rt.Status) > after && rt.Status.Phase == v1alpha1.PhaseStable
}

// Declined reports whether rt shows the request for c made at requestedAt
// acted on without a rotation: relay-server recorded it in
// status.observedRequests, the phase is Stable and no more rotations than
// after are counted. relay-server does so when it cannot rotate (a root
// whose intermediate or server certificate it did not generate), and says
// why in the Ready condition.
func Declined(rt *v1alpha1.RelayTrust, c Certificate, after int64, requestedAt metav1.Time) bool {
	seen := c.Observed(&rt.Status)
	return seen != nil && seen.Equal(&requestedAt) && rt.Status.Phase == v1alpha1.PhaseStable && c.Rotations(&rt.Status) <= after
}

// DeclinedError is Wait's error for a request relay-server acted on
// without rotating.
type DeclinedError struct {
	Certificate Certificate
	// Why is the Ready condition's message, when it is not True.
	Why string
}

func (e *DeclinedError) Error() string {
	why := "see the Events of the RelayTrust (kubectl describe relaytrust)"
	if e.Why != "" {
		why = e.Why
	}
	return fmt.Sprintf("relay-server took the request and did not rotate the %s: %s", e.Certificate.Describe(), why)
}

// Wait reads the RelayTrust every o.Interval until the rotation is done
// (Done) or ctx ends, and returns the last RelayTrust read. When ctx ends
// first, the error wraps ctx's and the RelayTrust is where the rotation
// stood. A read that fails for a while (a connection lost) is retried; a
// RelayTrust or an API that is gone, or a read that is forbidden, ends the
// wait.
func Wait(ctx context.Context, c client.Reader, o WaitOptions) (*v1alpha1.RelayTrust, error) {
	interval := o.Interval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	var (
		last     *v1alpha1.RelayTrust
		lastLine string
		lastErr  error
	)
	err := wait.PollUntilContextCancel(ctx, interval, true, func(ctx context.Context) (bool, error) {
		rt, err := Get(ctx, c, o.Namespace)
		if err != nil {
			if fatal(err) {
				return false, err
			}
			// A read cut short by the deadline says nothing of the cluster.
			if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > interval {
				lastErr = err
			}
			return false, nil
		}
		last, lastErr = rt, nil
		if line := PhaseLine(rt); line != lastLine && o.Progress != nil {
			lastLine = line
			o.Progress(rt)
		}
		if Done(rt, o.Certificate, o.After) {
			return true, nil
		}
		if !o.RequestedAt.IsZero() && Declined(rt, o.Certificate, o.After, o.RequestedAt) {
			de := &DeclinedError{Certificate: o.Certificate}
			if ready := meta.FindStatusCondition(rt.Status.Conditions, ConditionReady); ready != nil && ready.Status != metav1.ConditionTrue {
				de.Why = ready.Message
			}
			return false, de
		}
		return false, nil
	})
	switch {
	case err == nil:
		return last, nil
	case ctx.Err() != nil:
		err = fmt.Errorf("the %s rotation is not done: %w", o.Certificate.Describe(), context.Cause(ctx))
		if lastErr != nil {
			err = fmt.Errorf("%w (last read: %v)", err, lastErr)
		}
		return last, err
	}
	return last, err
}

// fatal reports whether a failed read ends a wait: what waiting does not
// mend.
func fatal(err error) bool {
	var nf *NotFoundError
	return errors.As(err, &nf) || meta.IsNoMatchError(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)
}
