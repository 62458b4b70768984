package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshrelay/meshrelay/internal/scheme"
)

// startTimeout bounds how long etcd and kube-apiserver may take to answer.
// Several clusters start at once on a small shared machine, so it is generous.
const startTimeout = 2 * time.Minute

// Cluster is one running local cluster.
type Cluster struct {
	// Name is the cluster's name and its context in the merged kubeconfig.
	Name string
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Client is a controller-runtime client with core and meshrelay types.
	Client client.Client
	// Kubeconfig is the path of this cluster's own kubeconfig file.
	Kubeconfig string
	// Dir holds the cluster's kubeconfig and its processes' logs.
	Dir string
	// CertManagerMetrics is the address (host:port) of cert-manager's
	// metrics, when Options.CertManager runs it.
	CertManagerMetrics string

	env         *envtest.Environment
	kcm         *controllerManager
	certManager *Process
}

// startCluster starts etcd and kube-apiserver for one cluster in dir,
// installs the CRDs found in crdDirs, starts kube-controller-manager when
// withKCM is set, and cert-manager's controller from the folder certManager
// when it is not empty. On error everything it started is stopped.
func startCluster(name, dir, assets string, crdDirs []string, withKCM bool, certManager string) (c *Cluster, err error) {
	scheme, err := scheme.Scheme()
	if err != nil {
		return nil, err
	}
	apiLog, err := os.Create(filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, fmt.Errorf("failed to create kube-apiserver log: %w", err)
	}
	etcdLog, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, fmt.Errorf("failed to create etcd log: %w", err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        crdDirs,
		ErrorIfCRDPathMissing:    true,
		Scheme:                   scheme,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  time.Minute,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog}
	api := env.ControlPlane.GetAPIServer()
	api.Out, api.Err = apiLog, apiLog

	c = &Cluster{Name: name, Dir: dir, env: env}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.stop())
		}
	}()
	if c.Config, err = env.Start(); err != nil {
		return c, fmt.Errorf("failed to start cluster %s (logs in %s): %w", name, dir, err)
	}
	admin, err := env.AddUser(envtest.User{Name: "meshrelay-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return c, fmt.Errorf("failed to add admin user to cluster %s: %w", name, err)
	}
	c.Config = admin.Config()
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := WriteKubeconfig(c.Kubeconfig, name, c.Config); err != nil {
		return c, err
	}
	if c.Client, err = client.New(c.Config, client.Options{Scheme: scheme}); err != nil {
		return c, fmt.Errorf("failed to build client for cluster %s: %w", name, err)
	}
	if withKCM {
		if c.kcm, err = startControllerManager(c, assets); err != nil {
			return c, err
		}
	}
	if certManager != "" {
		if c.certManager, err = startCertManager(c, certManager); err != nil {
			return c, err
		}
	}
	return c, nil
}

// stop stops cert-manager, kube-controller-manager, kube-apiserver and
// etcd.
func (c *Cluster) stop() error {
	var errs []error
	if c.certManager != nil {
		errs = append(errs, c.certManager.Stop())
	}
	if c.kcm != nil {
		errs = append(errs, c.kcm.stop())
	}
	if c.env != nil {
		if err := c.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("failed to stop cluster %s: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}

// WriteKubeconfig writes a kubeconfig with one context, name, that reaches
// the API server of cfg with its credentials.
func WriteKubeconfig(path, name string, cfg *rest.Config) error {
	if err := clientcmd.WriteToFile(*kubeconfigFor([]*Cluster{{Name: name, Config: cfg}}), path); err != nil {
		return fmt.Errorf("failed to write kubeconfig %s: %w", path, err)
	}
	return nil
}

// kubeconfigFor returns a kubeconfig with one context per cluster, named
// after the cluster; the first cluster is the current context.
func kubeconfigFor(clusters []*Cluster) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	for _, c := range clusters {
		cfg.Clusters[c.Name] = &clientcmdapi.Cluster{
			Server:                   c.Config.Host,
			CertificateAuthorityData: c.Config.CAData,
		}
		cfg.AuthInfos[c.Name] = &clientcmdapi.AuthInfo{
			ClientCertificateData: c.Config.CertData,
			ClientKeyData:         c.Config.KeyData,
			Token:                 c.Config.BearerToken,
		}
		cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: c.Name}
	}
	if len(clusters) > 0 {
		cfg.CurrentContext = clusters[0].Name
	}
	return cfg
}
