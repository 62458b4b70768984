package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTicks = 100

// processCPU returns the CPU time (user and system, every thread, live or
// ended) the process pid has used, from /proc/<pid>/stat: 10 ms steps.
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
// holds arg (the address it was told to listen on): relay-server is started
// through internal/testenv, which does not hand out its pid.
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

// machineCPU returns the CPU time every core of the machine has spent busy
// (not idle or waiting for I/O), from /proc/stat, and the number of cores.
func machineCPU() (busy time.Duration, cores int, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	var total, idle int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 5 && f[0] == "cpu":
			for i, v := range f[1:] {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, 0, fmt.Errorf("/proc/stat: %q", line)
				}
				total += n
				if i == 3 || i == 4 { // idle, iowait
					idle += n
				}
			}
		case len(f) > 0 && strings.HasPrefix(f[0], "cpu"):
			cores++
		}
	}
	return time.Duration(total-idle) * time.Second / clockTicks, cores, nil
}

// cpuWindow reads the CPU of processes and of the machine over a window.
type cpuWindow struct {
	names []string
	pids  []int
	start []time.Duration
	busy  time.Duration
	at    time.Time
}

// startCPUWindow starts reading the CPU of the processes pids, named
// names, and of the machine.
func startCPUWindow(names []string, pids []int) *cpuWindow {
	w := &cpuWindow{names: names, pids: pids, at: time.Now()}
	for _, p := range pids {
		c, _ := processCPU(p)
		w.start = append(w.start, c)
	}
	w.busy, _, _ = machineCPU()
	return w
}

// String says what each process and the machine spent since the window
// started.
func (w *cpuWindow) String() string {
	var parts []string
	for i, p := range w.pids {
		c, err := processCPU(p)
		if err != nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f s", w.names[i], (c-w.start[i]).Seconds()))
	}
	busy, cores, _ := machineCPU()
	elapsed := time.Since(w.at)
	return fmt.Sprintf("%s; the machine %.1f s of %.1f s (%d cores busy %.0f%%)", strings.Join(parts, ", "),
		(busy - w.busy).Seconds(), elapsed.Seconds()*float64(cores), cores, 100*(busy-w.busy).Seconds()/(elapsed.Seconds()*float64(max(cores, 1))))
}
