// Package procstat reads what /proc says of a process: its CPU time, and
// which process a binary started with an argument is. The load generators
// (hack/loadgen, hack/admissionbench) measure the processes they start
// through internal/testenv, which does not hand out their pids.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ClockTicks is the unit of the CPU times in /proc (USER_HZ, 100 on every
// Linux architecture Go supports).
const ClockTicks = 100

// ProcessCPU returns the CPU time (user and system, every thread, live or
// ended) the process pid has used, from /proc/<pid>/stat: 10 ms steps.
func ProcessCPU(pid int) (time.Duration, error) {
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
	return time.Duration(utime+stime) * time.Second / ClockTicks, nil
}

// PidOf returns the process of the binary named name whose command line
// holds arg (the address it was told to listen on).
func PidOf(name, arg string) (int, error) {
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
