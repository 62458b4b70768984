package procstat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProcessCPUCountsThisProcesssWork(t *testing.T) {
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the count moves: it is in steps of 1/ClockTicks second.
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for {
		for i := range 1_000_000 {
			x += i
		}
		after, err := ProcessCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CPU time stayed at %s over 10 s of spinning (%d)", before, x)
		}
	}
}

func TestPidOfFindsAProcessByBinaryAndArgument(t *testing.T) {
	pid, err := PidOf(filepath.Base(os.Args[0]), os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Errorf("PidOf found %d, want this process, %d", pid, os.Getpid())
	}
	if _, err := PidOf(filepath.Base(os.Args[0]), "no-such-argument"); err == nil || !strings.Contains(err.Error(), "no-such-argument") {
		t.Errorf("a missing process: %v, want an error naming the argument", err)
	}
}
