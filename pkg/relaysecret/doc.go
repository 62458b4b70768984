// Package relaysecret is the one place that knows each relay secret: its
// configured name, its data keys, how it decodes into typed material and
// what makes it valid. The admission webhook, relayctl, relay-server and
// relay-agent all decode and check relay secrets through it, so that what
// the webhook admits the server and agent load, and relayctl reports it the
// same way. It is built on pkg/pki and knows nothing of Kubernetes clients
// or gRPC.
package relaysecret
