package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

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
