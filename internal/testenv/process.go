package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
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

// FreeAddr returns a free loopback address (host:port) for a process to
// listen on later. The port is picked below the kernel's ephemeral range:
// a port from that range, free when FreeAddr returns, can be taken by any
// outgoing connection (a client of the API server, say) before the process
// binds it, which made a test fail with "address already in use". Each port
// is also reserved for as long as this process lives (reservePort), so that
// the test packages go test runs at once never pick the same one while the
// first has not bound it yet.
func FreeAddr() (string, error) {
	lo, hi := belowEphemeral()
	for range 50 {
		port := lo + rand.IntN(hi-lo)
		if !reservePort(port) {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return l.Addr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// belowEphemeral returns a port range [lo, hi) under the kernel's ephemeral
// ports (Linux's ip_local_port_range, 32768 by default).
func belowEphemeral() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				hi = n
			}
		}
	}
	return hi - 10000, hi
}

// Process is a running binary whose output goes to a log file: a relay
// binary started by the end-to-end suite, make demo or the load generator.
type Process struct {
	Name   string
	Log    string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// StartProcess starts bin with args, its output in logPath.
func StartProcess(bin, logPath string, args ...string) (*Process, error) {
	return StartProcessEnv(bin, logPath, nil, args...)
}

// StartProcessEnv is StartProcess with env (KEY=value each) added to the
// environment the process inherits, such as the POD_NAME a Deployment
// gives each pod.
func StartProcessEnv(bin, logPath string, env []string, args ...string) (*Process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("failed to start %s: %w", bin, err)
	}
	p := &Process{Name: strings.TrimSuffix(filepath.Base(logPath), ".log"), Log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.exited) }()
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.exited:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM and expects a clean exit within 20 seconds. A process
// that had already ended returns how it ended.
func (p *Process) Stop() error {
	if exited, err := p.Exited(); exited {
		if err != nil {
			return fmt.Errorf("%s had exited: %w", p.Name, err)
		}
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			return fmt.Errorf("%s did not exit cleanly on SIGTERM: %w", p.Name, p.err)
		}
		return nil
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within 20s of SIGTERM", p.Name)
	}
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string { return TailFile(p.Log, n) }

// TailFile returns the last n lines of the file at path, or nothing when
// it cannot be read.
func TailFile(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitReady polls url until it answers 200, p exits, or timeout passes.
func WaitReady(ctx context.Context, p *Process, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.Name, err, p.Tail(20))
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s after %s:\n%s", p.Name, url, timeout, p.Tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
