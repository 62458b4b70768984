package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// floorProcess is the floor server, a second process of this binary.
type floorProcess struct {
	cmd  *exec.Cmd
	addr string
}

// startFloor starts the floor with relay-server's own server certificate,
// signing CA and identity token, read from the local cluster.
func (e *environment) startFloor(ctx context.Context) (*floorProcess, error) {
	dir := filepath.Join(e.dir, "floor")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := map[string][2]string{
		floorServerCert:  {"relay-server-tls-secret", "tls.crt"},
		floorServerKey:   {"relay-server-tls-secret", "tls.key"},
		floorSigningCert: {"relay-tls-signing-secret", "tls.crt"},
		floorSigningKey:  {"relay-tls-signing-secret", "tls.key"},
		floorSigningCA:   {"relay-tls-signing-secret", "ca.crt"},
		floorRootCA:      {"relay-root-tls-secret", "ca.crt"},
		floorToken:       {"relay-identity-token-secret", "token"},
	}
	for file, from := range files {
		var s corev1.Secret
		if err := e.client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: from[0]}, &s); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, file), s.Data[from[1]], 0o600); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, floorCommand, "--dir", dir, "--listen", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start the floor: %w", err)
	}
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the floor did not start: %w", err)
	}
	return &floorProcess{cmd: cmd, addr: strings.TrimSpace(addr)}, nil
}

func (f *floorProcess) pid() int { return f.cmd.Process.Pid }

func (f *floorProcess) stop() {
	_ = f.cmd.Process.Kill()
	_ = f.cmd.Wait()
}
