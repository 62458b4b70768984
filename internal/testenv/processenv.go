package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// StartProcessEnv is StartProcess with env (KEY=value each) added to the
// environment the process inherits, such as the POD_NAME a Deployment
// gives each pod.
func StartProcessEnv(bin, logPath string, env []string, args ...string) (*Process, error) {
	if len(env) == 0 {
		return StartProcess(bin, logPath, args...)
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("failed to start %s: %w", bin, err)
	}
	p := &Process{Name: strings.TrimSuffix(filepath.Base(logPath), ".log"), Log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.exited) }()
	return p, nil
}

// Kill ends the process with SIGKILL, as a node that dies or a container
// killed for its memory does: no shutdown code runs. It returns once the
// process has ended; a process that had already ended is left alone.
func (p *Process) Kill() error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("failed to kill %s: %w", p.Name, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s still runs 10s after SIGKILL", p.Name)
	}
}
