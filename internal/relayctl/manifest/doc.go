// Package manifest reads Kubernetes manifests offline, for relayctl
// validate: it decodes multi-document YAML and JSON streams (and the items
// of a List) into the typed objects the admission webhook checks, and
// serves them back through an in-memory client.Reader, so that the checks
// that look up other secrets (the root beside a client certificate) find
// them among the manifests instead of in a cluster.
//
// Input comes from outside: every document is bounded in size, and every
// problem is an *Error naming the file, the document (and the line it
// starts on) and what is wrong, so that one broken document does not hide
// the others.
package manifest
