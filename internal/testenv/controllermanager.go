package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kcmControllers are the controllers a local cluster runs: enough for
// Deployments to make Pods, namespaces to get their default ServiceAccount,
// deletions to cascade, and PodDisruptionBudgets to count healthy pods for
// the Eviction API. No scheduler runs, so Pods stay Pending, which is all
// admission tests need.
var kcmControllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"serviceaccount-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"disruption-controller",
}

// controllerManager is a running kube-controller-manager process.
type controllerManager struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

// startControllerManager starts kube-controller-manager against c and waits
// until its /healthz answers.
func startControllerManager(c *Cluster, assets string) (*controllerManager, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(c.Dir, "kube-controller-manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("failed to create kube-controller-manager log: %w", err)
	}
	certDir := filepath.Join(c.Dir, "kcm-certs")
	cmd := exec.Command(filepath.Join(assets, KubeControllerManager),
		"--kubeconfig="+c.Kubeconfig,
		"--authentication-kubeconfig="+c.Kubeconfig,
		"--authorization-kubeconfig="+c.Kubeconfig,
		"--controllers="+strings.Join(kcmControllers, ","),
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+certDir,
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("failed to start kube-controller-manager for cluster %s: %w", c.Name, err)
	}
	m := &controllerManager{cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() {
		m.done <- cmd.Wait()
		_ = logFile.Close()
	}()
	if err := m.waitHealthy(port, startTimeout); err != nil {
		return nil, errors.Join(
			fmt.Errorf("kube-controller-manager for cluster %s did not become healthy (log: %s): %w", c.Name, logPath, err),
			m.stop())
	}
	return m, nil
}

func (m *controllerManager) waitHealthy(port int, timeout time.Duration) error {
	httpc := &http.Client{
		Timeout: 2 * time.Second,
		// The serving certificate is self-signed in a test folder; only
		// liveness is asked here, nothing is sent.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // see above
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case err := <-m.done:
			m.done <- err
			return fmt.Errorf("process exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("no healthy answer from %s in %s: last error: %v", url, timeout, last)
		case <-tick.C:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := httpc.Do(req)
		if err != nil {
			last = err
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = fmt.Errorf("status %s", resp.Status)
	}
}

// stop sends SIGTERM, then SIGKILL after ten seconds, and waits for exit.
func (m *controllerManager) stop() error {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	return nil
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("failed to find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
