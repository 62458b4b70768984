// Package config holds the relay server's and agent's settings, named as the
// Helm values of the product meshrelay is compatible with name them
// (glooMgmtServer.relay.* and glooAgent.relay.*: disableCa, signingTlsSecret,
// tokenSecret{name,key,namespace}, clientTlsSecretRotationGracePeriodRatio,
// ...), with its defaults (docs/compatibility.md). Settings come from a YAML or JSON
// config file and from flags; a flag given on the command line wins over the
// file. Unknown keys in a file are errors, so a typo never silently falls
// back to a default.
package config
