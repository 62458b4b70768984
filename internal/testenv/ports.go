package testenv

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// reserved holds open the lock files of the ports this process reserved:
// a port stays reserved until the process exits, when the kernel releases
// its locks, however it exits.
var reserved struct {
	sync.Mutex
	files []*os.File
}

// reservePort reserves port against every other process of this user that
// reserves ports this way, with an exclusive lock on a file named after
// it, and reports whether it got it. A port another process (or this one)
// reserved is refused. When the lock files cannot be made at all, every
// port is granted, as before reservations existed.
func reservePort(port int) bool {
	dir := filepath.Join(os.TempDir(), "meshrelay-test-ports-"+strconv.Itoa(os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	reserved.Lock()
	reserved.files = append(reserved.files, f)
	reserved.Unlock()
	return true
}
