// Package webhook holds relay-webhook's admission webhooks: validation of
// the relay secrets, Istio's cacerts, cert-manager Certificates that write
// relay secrets and KubernetesCluster names, and the injection of the
// certificate volumes and the trust bundle into agent pods.
//
// Each resource has its own file with its webhook on controller-runtime's
// typed path: an admission.Validator (the Secret one, the Certificate one,
// the KubernetesCluster one) or the pod injector's admission.Defaulter,
// each registered by its SetupWebhookWithManager at the path the
// manifests' webhook configurations name, so the framework decodes the
// objects and computes the injector's patch. Create and update share one
// private validate; deletes are allowed, but for one: on the management
// cluster the root guard (rootguard.go) keeps in relay-root-tls-secret,
// through updates and deletes, every root a live client certificate of
// a registered cluster still chains to.
//
// The checks are pkg/pki's, the same the server, the agent and relayctl
// run, so that a secret the webhook admits is one they accept. A denial is
// one line per problem saying what is wrong and how to fix it; what is
// allowed but worth knowing (a certificate inside its rotation window, a
// short token) comes back as an admission warning that kubectl prints,
// with a denial as well as with an admission. A failure to read the
// secrets a check needs is an internal error (500), not a denial.
package webhook
