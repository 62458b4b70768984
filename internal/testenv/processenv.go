package testenv

import (
	"fmt"
	"syscall"
	"time"
)

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
