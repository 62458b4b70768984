package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/procstat"
)

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
	return time.Duration(total-idle) * time.Second / procstat.ClockTicks, cores, nil
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
		c, _ := procstat.ProcessCPU(p)
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
		c, err := procstat.ProcessCPU(p)
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
