// Package agent is the workload side of the relay: it establishes trust with
// the relay server (identity token, a provided client certificate, or a root
// key that lets it issue its own), keeps the current client certificate in a
// provider that every new handshake reads, watches the client secret and
// its trust anchors for changes, rotates the certificate the relay server
// issued before it expires (leader only), keeps the server's trust bundle
// in its cluster (leader only), and keeps its streams to the server open
// with backoff and jitter: one Connect stream, or a push and a pull stream
// with a server that predates Connect.
//
// Agent only wires its roles, each built from its own options struct:
// the watcher (watcher.go) reads the secrets (secrets.go) into the provider
// and the trust anchors (anchors.go), which come from the mounted trust
// bundle folder when there is one (trustdir.go) and from the bundle the
// server pushes (bundle.go); the rotator (rotator.go, rotator_trust.go,
// schedule.go, internal/backoff) decides when to renew, at the latest at the
// time the server set (renewat.go), and only what the relay server issued
// (issuedby.go), and asks the issuer (issue.go); the streams (streams.go,
// session.go, instructions.go) talk to the server; the bundle writer
// (bundlewriter.go) keeps the server's bundle in the cluster; and, with
// federated trust, the Istio CA (istio.go, intermediate.go, restart.go)
// installs istio-system/cacerts. Timers go through an injected clock.
package agent
