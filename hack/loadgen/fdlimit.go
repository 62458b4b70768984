package main

import (
	"fmt"
	"syscall"
)

// Beside one descriptor per agent (its connection), this process holds
// fdsBeside others at most: clients of the local cluster, the metrics
// reads, a renewal's second connection, the handovers. A balancer process
// holds six per connection it proxies: its two sockets, and the pipe (two
// descriptors) through which each direction's copy splices.
const (
	fdsBeside          = 4096
	fdsPerBalancedConn = 6
)

// ensureFileLimit raises this process's limit of open files to need when
// it is lower, as far as it is allowed to, and says how to raise it when
// that is not far enough. A balancer that runs out of descriptors stops
// accepting, and every agent behind it fails to connect.
func ensureFileLimit(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("failed to read the limit of open files: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	}
	// Without the privilege to raise the hard limit, the soft one goes as
	// far as the hard one.
	if lim.Max >= need {
		want = syscall.Rlimit{Cur: need, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			return nil
		}
	}
	return fmt.Errorf("these phases need about %d open files in this process and its limit is %d (hard limit %d): raise it (ulimit -n %d) or run fewer --agents", need, lim.Cur, lim.Max, need)
}
