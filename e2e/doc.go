// Package e2e runs meshrelay's real binaries as processes against local
// clusters, driven by kubectl, the way users run them.
package e2e
