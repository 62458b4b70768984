package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTicks = 100

// processCPU returns the CPU time (user and system, every thread) the
// process pid has used, from /proc/<pid>/stat: 10 ms steps.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it follow
	// its closing parenthesis: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// pidOf returns the process of the binary named name whose command line
// holds arg (the address it was told to listen on): internal/testenv does
// not hand out the pids of the processes it starts.
func pidOf(name, arg string) (int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		args := bytes.Split(b, []byte{0})
		if filepath.Base(string(args[0])) != name {
			continue
		}
		for _, a := range args {
			if string(a) == arg {
				return strconv.Atoi(filepath.Base(filepath.Dir(d)))
			}
		}
	}
	return 0, fmt.Errorf("no %s process with argument %s", name, arg)
}

// webhookConnections returns the remote ends (hex address:port, as
// /proc/net/tcp writes them) of the established TCP connections to addr
// (host:port), the webhook's listener: the API server's connections.
func webhookConnections(addr string) ([]string, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil, err
	}
	want := fmt.Sprintf(":%04X", port)
	var out []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl, local_address, rem_address, st (01: established), ...
			if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "01" {
				out = append(out, f[2])
			}
		}
	}
	return out, nil
}
