package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// cert-manager for the bring-your-own-PKI tests: its real controller, built
// by `make cert-manager` from the release hack/certmanager/go.mod pins, runs
// as a process against a local cluster, with that release's CRDs installed.
const (
	// CertManagerEnv names the folder holding cert-manager's controller and
	// its CRDs (crds/); the Makefile sets it for make test.
	CertManagerEnv = "CERT_MANAGER_ASSETS"
	// CertManagerController is the controller binary's name in that folder.
	CertManagerController = "cert-manager-controller"
	// certManagerModule is the module hack/certmanager/go.mod pins.
	certManagerModule = "github.com/cert-manager/cert-manager"
)

// certManagerControllers are the controllers a local cluster's cert-manager
// runs: Issuers, the CA and self-signed issuers, the approver of
// CertificateRequests, and the Certificate controllers that request, store
// and renew. ACME, Vault, Venafi, ClusterIssuers and the ingress and gateway
// shims stay off: nothing here uses them.
var certManagerControllers = []string{
	"issuers",
	"certificaterequests-approver",
	"certificaterequests-issuer-ca",
	"certificaterequests-issuer-selfsigned",
	"certificates-trigger",
	"certificates-issuing",
	"certificates-key-manager",
	"certificates-request-manager",
	"certificates-readiness",
	"certificates-revision-manager",
}

// CertManagerVersion returns the cert-manager release hack/certmanager/go.mod
// pins, such as v1.11.5.
func CertManagerVersion() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	path := filepath.Join(root, "hack", "certmanager", "go.mod")
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("failed to read %s: %w", path, err)
	}
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(fields) >= 2 && fields[0] == certManagerModule {
			return fields[1], nil
		}
	}
	return "", fmt.Errorf("failed to find %s in %s", certManagerModule, path)
}

// CertManagerDir returns the folder holding cert-manager's controller and
// CRDs: $CERT_MANAGER_ASSETS when set, otherwise
// bin/cert-manager/<version>-<os>-<arch> in the repository, where
// `make cert-manager` builds them.
func CertManagerDir() (string, error) {
	if dir := os.Getenv(CertManagerEnv); dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	version, err := CertManagerVersion()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "cert-manager", fmt.Sprintf("%s-%s-%s", version, runtime.GOOS, runtime.GOARCH)), nil
}

// CheckCertManager returns an error saying what dir lacks of cert-manager
// (the controller, its CRDs) and how to provide it.
func CheckCertManager(dir string) error {
	var missing []string
	if fi, err := os.Stat(filepath.Join(dir, CertManagerController)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		missing = append(missing, "executable "+CertManagerController)
	}
	if crds, _ := filepath.Glob(filepath.Join(dir, "crds", "*.yaml")); len(crds) == 0 {
		missing = append(missing, "CRDs in crds/")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("cert-manager missing from %s: %s; run `make cert-manager` (it builds the controller "+
		"from hack/certmanager's pin, a few minutes the first time, and writes its CRDs), or set %s to a folder that holds them",
		dir, strings.Join(missing, " and "), CertManagerEnv)
}

// startCertManager runs cert-manager's controller from dir against c, its
// log in c.Dir, and waits until its metrics endpoint answers.
func startCertManager(c *Cluster, dir string) (*Process, error) {
	metrics, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	p, err := StartProcess(filepath.Join(dir, CertManagerController), filepath.Join(c.Dir, "cert-manager.log"),
		"--kubeconfig="+c.Kubeconfig,
		"--leader-elect=false",
		"--controllers="+strings.Join(certManagerControllers, ","),
		"--metrics-listen-address="+metrics,
		// The default, named because ClusterIssuers would keep their
		// secrets there; they are off.
		"--cluster-resource-namespace=kube-system",
		"--v=2",
	)
	if err != nil {
		return nil, err
	}
	if err := WaitReady(context.Background(), p, "http://"+metrics+"/metrics", startTimeout); err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("cert-manager for cluster %s: %w", c.Name, err)
	}
	c.CertManagerMetrics = metrics
	return p, nil
}
