package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// balancerCommand is the first argument that makes loadgen a balancer
// (testenv.Balancer) in a process of its own: each connection it proxies
// holds six of its descriptors, so the failover phase's agents are spread
// over as many balancer processes as their limit of open files asks, as
// the nodes of a cluster each route a Service's connections themselves.
const balancerCommand = "balancer"

// balancerMain runs a balancer over the backends given until it is
// killed, printing its address first.
func balancerMain(args []string) error {
	fs := flag.NewFlagSet(balancerCommand, flag.ContinueOnError)
	backends := fs.String("backends", "", "comma-separated backend addresses")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := ensureFileLimit(fileLimit()); err != nil {
		return err
	}
	lb, err := testenv.NewBalancer(strings.Split(*backends, ",")...)
	if err != nil {
		return err
	}
	fmt.Println(lb.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	return lb.Close()
}

// balancerProcess is a balancer running as a process of this binary.
type balancerProcess struct {
	cmd  *exec.Cmd
	addr string
}

// startBalancer starts a balancer process over backends.
func startBalancer(backends []string) (*balancerProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, balancerCommand, "--backends", strings.Join(backends, ","))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start a balancer: %w", err)
	}
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the balancer did not start: %w", err)
	}
	return &balancerProcess{cmd: cmd, addr: strings.TrimSpace(addr)}, nil
}

func (b *balancerProcess) stop() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	_ = b.cmd.Wait()
}

// fileLimit returns this process's limit of open files.
func fileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	return lim.Max
}
