// Package agent is the workload side of the relay: it establishes trust with
// the relay server (identity token, a provided client certificate, or a root
// key that lets it issue its own), keeps the current client certificate in a
// provider that every new handshake reads, watches the client secret for
// changes, rotates the certificate before it expires (leader only), and
// keeps its push and pull streams open with backoff and jitter.
//
// Agent only wires its roles, each built from its own options struct:
// the watcher (watcher.go) reads the secrets (secrets.go) into the provider
// and the roots; the rotator (rotator.go, schedule.go, backoff.go) decides
// when to renew and asks the issuer (issue.go); the streams (streams.go,
// session.go, instructions.go) talk to the server; and, with federated
// trust, the Istio CA (istio.go, intermediate.go, restart.go) installs
// istio-system/cacerts. Timers go through an injected clock.
package agent
