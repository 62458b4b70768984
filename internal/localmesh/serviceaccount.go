package localmesh

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// tokenLifetime is how long a ServiceAccount token asked for a local
// process lasts: longer than any test or demo runs, as the kubelet
// refreshes a pod's token before it expires and nothing refreshes ours.
const tokenLifetime = 24 * time.Hour

// ServiceAccountKubeconfig asks cluster, by TokenRequest, for a token of
// ServiceAccount namespace/name and writes to path a kubeconfig that
// reaches cluster's API server with that token alone: what a pod of that
// ServiceAccount is given, as a file a local process can read.
func ServiceAccountKubeconfig(ctx context.Context, cluster *testenv.Cluster, namespace, name, path string) error {
	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		return fmt.Errorf("failed to build a client for cluster %s: %w", cluster.Name, err)
	}
	secs := int64(tokenLifetime / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("failed to request a token for ServiceAccount %s/%s on cluster %s (is the overlay that creates it applied?): %w", namespace, name, cluster.Name, err)
	}
	cfg := &rest.Config{
		Host:            cluster.Config.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: cluster.Config.CAData},
		BearerToken:     tr.Status.Token,
	}
	return testenv.WriteKubeconfig(path, cluster.Name, cfg)
}
