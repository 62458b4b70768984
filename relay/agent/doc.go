// Package agent is the workload side of the relay: it establishes trust with
// the relay server (identity token, a provided client certificate, or a root
// key that lets it issue its own), keeps the current client certificate in a
// provider that every new handshake reads, watches the client secret for
// changes, rotates the certificate before it expires (leader only), and
// keeps its push and pull streams open with backoff and jitter.
package agent
