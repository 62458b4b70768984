// Package webhook holds relay-webhook's admission handlers: validation of
// the relay secrets, Istio's cacerts, cert-manager Certificates that write
// relay secrets and KubernetesCluster names, and the injection of the
// certificate volumes into agent pods.
//
// Each resource has its own file with a private validate shared by create
// and update. The checks are pkg/pki's, the same the server, the agent and
// relayctl run, so that a secret the webhook admits is one they accept.
// A denial is one line per problem saying what is wrong and how to fix it;
// what is allowed but worth knowing (a certificate inside its rotation
// window, a short token) comes back as an admission warning that kubectl
// prints.
package webhook
