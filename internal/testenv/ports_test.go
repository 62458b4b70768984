package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestReservedPortIsRefusedToOthers reserves a port, then asks for it
// again from this process and from another: both are refused while this
// process lives; a port nobody reserved is granted.
func TestReservedPortIsRefusedToOthers(t *testing.T) {
	if p := os.Getenv("MESHRELAY_TEST_RESERVE_PORT"); p != "" {
		port, _ := strconv.Atoi(p)
		if reservePort(port) {
			os.Stdout.WriteString("granted\n")
		} else {
			os.Stdout.WriteString("refused\n")
		}
		return
	}
	lo, hi := belowEphemeral()
	port := -1
	for p := lo; p < hi; p++ {
		if reservePort(p) {
			port = p
			break
		}
	}
	if port < 0 {
		t.Fatal("no port could be reserved")
	}
	if reservePort(port) {
		t.Fatalf("port %d reserved twice by one process", port)
	}
	other := func(port int) string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReservedPortIsRefusedToOthers$")
		cmd.Env = append(os.Environ(), "MESHRELAY_TEST_RESERVE_PORT="+strconv.Itoa(port))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("the other process: %v", err)
		}
		return strings.Fields(string(out))[0]
	}
	if got := other(port); got != "refused" {
		t.Fatalf("another process asked for port %d, reserved here: %s", port, got)
	}
	free := -1
	for p := port + 1; p < hi; p++ {
		if reservePort(p) {
			free = p
			break
		}
	}
	// Release free by closing its lock, as this process's exit would.
	reserved.Lock()
	last := reserved.files[len(reserved.files)-1]
	reserved.files = reserved.files[:len(reserved.files)-1]
	reserved.Unlock()
	last.Close()
	if got := other(free); got != "granted" {
		t.Fatalf("another process asked for port %d, released here: %s", free, got)
	}
}
