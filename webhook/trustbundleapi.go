package webhook

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
)

// Intervals of the ClusterTrustBundle API check.
const (
	// trustBundleAPIRecheck: the API appears when the cluster is upgraded
	// or a feature gate is turned on, and may go when it is turned off.
	trustBundleAPIRecheck = 5 * time.Minute
	// trustBundleAPIRetry: discovery failed, so the answer is unknown.
	trustBundleAPIRetry = 10 * time.Second
)

// trustBundleAPI tells the injector whether the cluster serves
// ClusterTrustBundles (certificates.k8s.io/v1), from discovery: checked
// once before the webhook serves and again every few minutes. Where they
// are not served, agent pods get the trust bundle from the root secret
// alone, and that is said once in an Info log, not as an error: a cluster
// before Kubernetes 1.37 is a supported one. It runs on every replica.
type trustBundleAPI struct {
	disc   discovery.DiscoveryInterface
	served atomic.Bool
	// known is set once a check succeeded; reported is what was last
	// logged.
	known, reported bool
	log             logr.Logger
}

var clusterTrustBundlesGV = certificatesv1.SchemeGroupVersion.String()

func newTrustBundleAPI(disc discovery.DiscoveryInterface, log logr.Logger) *trustBundleAPI {
	return &trustBundleAPI{disc: disc, log: log}
}

// Served reports whether the last check found ClusterTrustBundles served;
// false before any check succeeded.
func (a *trustBundleAPI) Served() bool { return a.served.Load() }

// check asks discovery, records the answer and logs a change.
func (a *trustBundleAPI) check() error {
	served, err := clusterTrustBundlesServed(a.disc)
	if err != nil {
		return err
	}
	a.served.Store(served)
	if !a.known || served != a.reported {
		if served {
			a.log.Info("the cluster serves ClusterTrustBundles: agent pods get the relay ClusterTrustBundle in their trust bundle volume", "api", clusterTrustBundlesGV)
		} else {
			a.log.Info("the cluster does not serve ClusterTrustBundles: agent pods get the trust bundle from the root secret alone", "api", clusterTrustBundlesGV)
		}
	}
	a.known, a.reported = true, served
	return nil
}

// NeedLeaderElection is false: every replica injects.
func (a *trustBundleAPI) NeedLeaderElection() bool { return false }

// Start checks again every trustBundleAPIRecheck (every
// trustBundleAPIRetry while discovery fails) until ctx ends.
func (a *trustBundleAPI) Start(ctx context.Context) error {
	wait := trustBundleAPIRecheck
	if !a.known {
		wait = trustBundleAPIRetry
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = trustBundleAPIRecheck
		if err := a.check(); err != nil {
			a.log.Error(err, "failed to find out whether the cluster serves ClusterTrustBundles; keeping the last answer", "served", a.Served())
			wait = trustBundleAPIRetry
		}
	}
}

// clusterTrustBundlesServed reports whether disc lists clustertrustbundles
// in certificates.k8s.io/v1. A group version the server does not have is
// a no, not an error.
func clusterTrustBundlesServed(disc discovery.DiscoveryInterface) (bool, error) {
	list, err := disc.ServerResourcesForGroupVersion(clusterTrustBundlesGV)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to discover the resources of %s: %w", clusterTrustBundlesGV, err)
	}
	for _, r := range list.APIResources {
		if r.Name == "clustertrustbundles" {
			return true, nil
		}
	}
	return false, nil
}
