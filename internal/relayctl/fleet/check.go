package fleet

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Status is how a finding of Check turned out.
type Status string

const (
	OK      Status = "ok"
	Warning Status = "warning"
	Problem Status = "problem"
)

// Finding is one checked thing: what was checked, on which cluster, and
// for a problem or warning what is wrong and how to fix it, in one line.
type Finding struct {
	Cluster string `json:"cluster"`
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Detail  string `json:"detail"`
}

// ClusterStatus is one workload cluster as the management cluster sees it.
type ClusterStatus struct {
	Name       string `json:"name"`
	Context    string `json:"context,omitempty"`
	Registered bool   `json:"registered"`
	// Pushing and Pulling count the agent's open streams on the server,
	// summed over the replicas.
	Pushing int `json:"pushing"`
	Pulling int `json:"pulling"`
	// StreamsFrom says where the streams were read: StreamsFromStatus or
	// StreamsFromMetrics; empty when they were not.
	StreamsFrom string `json:"streamsFrom,omitempty"`
	// Replicas are the relay-server replicas that hold some of the
	// streams: from status, live replicas only.
	Replicas []ReplicaStreams `json:"replicas,omitempty"`
	// ConnectedCondition is the Connected condition of the cluster's
	// KubernetesCluster, as relay-server's leader wrote it (status only).
	ConnectedCondition *metav1.Condition `json:"connectedCondition,omitempty"`
	// ServerSeenCertificate is the newest client certificate relay-server
	// issued or saw at a handshake, from status.
	ServerSeenCertificate *v1alpha1.CertificateSummary `json:"serverSeenCertificate,omitempty"`
	// AgentVersion and LastSeen are what relay-server last heard from the
	// cluster's agent, from status.
	AgentVersion string     `json:"agentVersion,omitempty"`
	LastSeen     *time.Time `json:"lastSeen,omitempty"`
	// ClientExpiry is the client certificate's NotAfter, when known.
	ClientExpiry *time.Time `json:"clientExpiry,omitempty"`
}

// Report is what Check found.
type Report struct {
	Clusters []ClusterStatus `json:"clusters"`
	Findings []Finding       `json:"findings"`
}

// Problems counts the findings with status Problem.
func (r *Report) Problems() int {
	n := 0
	for _, f := range r.Findings {
		if f.Status == Problem {
			n++
		}
	}
	return n
}

// Remote is a workload cluster to check.
type Remote struct {
	// Context is its kubeconfig context, for the report.
	Context string
	// Name is its registered name; empty means the DNS name of its client
	// certificate, or else its context.
	Name   string
	Client client.Client
}

// CheckOptions say what Check looks at.
type CheckOptions struct {
	Server  *config.Server
	Agent   *config.Agent
	Webhook *config.Webhook
	Mgmt    client.Client
	Remotes []Remote
	// StreamsFrom says where the connection checks read each cluster's
	// streams: StreamsFromStatus, StreamsFromMetrics, or empty to skip them.
	StreamsFrom string
	// Metrics returns relay-server's /metrics of every replica, for
	// StreamsFromMetrics: PodMetrics finds them behind its Service.
	Metrics func(ctx context.Context) ([]MetricsPage, error)
	Now     time.Time
}

// warnLeft is how much of a certificate's lifetime may be left before
// Check warns that it is close to expiry.
const warnLeft = 0.1

// Check looks at the management cluster and each remote: the relay
// secrets are present and consistent (a usable bootstrap token, client chains to a root
// the server trusts, client SAN is the registered name, server SANs cover
// the authority), their expiry, the webhook's caBundle, and each cluster's
// registration and streams (read as StreamsFrom says). It returns an error
// only when it could not look; what it found wrong is in the report.
func Check(ctx context.Context, o CheckOptions) (*Report, error) {
	r := &Report{}
	c := &checker{o: o, r: r}
	if err := c.management(ctx); err != nil {
		return nil, err
	}
	for _, rm := range o.Remotes {
		if err := c.remote(ctx, rm); err != nil {
			return nil, err
		}
	}
	return r, nil
}

type checker struct {
	o CheckOptions
	r *Report
	issuerCheckFields
	// roots are the CAs relay-server trusts for client certificates:
	// relay-root-tls-secret's ca.crt alone.
	roots []*x509.Certificate
	token []byte
	// streams is what the management side says of each cluster's streams.
	streams serverStreams
}

func (c *checker) add(cluster, check string, st Status, format string, args ...any) {
	c.r.Findings = append(c.r.Findings, Finding{Cluster: cluster, Check: check, Status: st, Detail: fmt.Sprintf(format, args...)})
}

func (c *checker) management(ctx context.Context) error {
	srv := c.o.Server
	const side = "management"
	secret := func(ref config.SecretRef) (*corev1.Secret, types.NamespacedName, error) {
		key := ref.NamespacedName(srv.Namespace)
		s, err := lookupSecret(ctx, c.o.Mgmt, key, side)
		return s, key, err
	}

	root, rootKey, err := secret(srv.RootTLSSecret)
	if err != nil {
		return err
	}
	if root != nil {
		if m, r := relaysecret.Validate(relaysecret.Root, root.Data, "", relaysecret.Context{Now: c.o.Now}); m == nil {
			c.add(side, "secret "+rootKey.String(), Problem, "%v", r.Err())
		} else {
			c.roots = append(c.roots, m.Roots...)
			c.expiry(side, "secret "+rootKey.String(), m.Roots[0])
		}
	}

	server, serverKey, err := secret(srv.TLSSecret)
	if err != nil {
		return err
	}
	switch {
	case server == nil:
		c.add(side, "secret "+serverKey.String(), Problem, "not found: relay-server creates it unless disableCaCertGeneration; with cert-manager, check the Certificate that writes it (kubectl describe certificate -n %s)", srv.Namespace)
	default:
		v, r := relaysecret.Validate(relaysecret.Server, server.Data, "", c.context(""))
		if v == nil {
			c.add(side, "secret "+serverKey.String(), Problem, "%v", r.Err())
		} else {
			c.expiry(side, "secret "+serverKey.String(), v.Cert)
		}
	}
	if root == nil {
		c.add(side, "secret "+rootKey.String(), Problem, "not found: relay-server verifies client certificates against its ca.crt alone (and sends it to agents), so it admits none; start relay-server with its CA on, restore the secret (relayctl restore), or create it with your root CA's certificate as ca.crt")
	}

	if !srv.DisableCa {
		signing, signingKey, err := secret(srv.SigningTLSSecret)
		if err != nil {
			return err
		}
		if signing == nil && server != nil && relaysecret.ManagedElsewhere(server) {
			c.add(side, "secret "+signingKey.String(), OK, "not found, and %s is managed elsewhere (cert-manager): relay-server runs with disableCa and signs nothing", serverKey)
		} else if signing == nil {
			c.add(side, "secret "+signingKey.String(), Problem, "not found: relay-server cannot sign client certificates; let it create the secret (disableCaCertGeneration off) or restore it")
		} else if m, r := relaysecret.Validate(relaysecret.Signing, signing.Data, "", c.context("")); m == nil {
			c.add(side, "secret "+signingKey.String(), Problem, "%v: the signing CA must chain to the root agents trust", r.Err())
		} else {
			c.signing = m.Cert
			for _, prev := range m.Previous {
				if _, err := pki.VerifyChain(prev, nil, append(slices.Clone(m.Roots), c.roots...), pki.RoleSigningCA, c.o.Now); err == nil {
					c.previous = append(c.previous, prev)
				}
			}
			c.expiry(side, "secret "+signingKey.String(), m.Cert)
		}
	}
	if err := c.clientIssuers(ctx, side, c.signing); err != nil {
		return err
	}

	tok, tokKey, err := secret(srv.TokenSecret.SecretRef)
	if err != nil {
		return err
	}
	switch {
	case tok == nil:
		c.add(side, "secret "+tokKey.String(), OK, "no shared identity token: clusters bootstrap only with their own tokens (relayctl register)")
	default:
		m, r := relaysecret.Validate(relaysecret.Token, tok.Data, srv.TokenSecret.Key, relaysecret.Context{})
		if m == nil {
			c.add(side, "secret "+tokKey.String(), Problem, "%v", r.Err())
			break
		}
		c.token = m.Token
		c.sharedToken(side, tokKey)
	}

	if err := c.webhook(ctx, side, c.o.Mgmt); err != nil {
		return err
	}
	return c.serverSide(ctx)
}

func (c *checker) remote(ctx context.Context, rm Remote) error {
	ag := c.o.Agent
	get := func(ref config.SecretRef) (*corev1.Secret, types.NamespacedName, error) {
		key := ref.NamespacedName(ag.Namespace)
		s, err := lookupSecret(ctx, rm.Client, key, "workload cluster "+rm.Context)
		return s, key, err
	}
	clientSecret, clientKey, err := get(ag.ClientTLSSecret)
	if err != nil {
		return err
	}
	own := readOwnCert(clientSecret, c.roots)
	name := rm.Name
	if name == "" && own.cert != nil && len(own.cert.DNSNames) == 1 {
		name = own.cert.DNSNames[0]
	}
	if name == "" {
		name = rm.Context
	}
	st := ClusterStatus{Name: name, Context: rm.Context}

	var kc v1alpha1.KubernetesCluster
	registered := &kc
	switch err := c.o.Mgmt.Get(ctx, types.NamespacedName{Namespace: c.o.Server.Namespace, Name: name}, &kc); {
	case apierrors.IsNotFound(err):
		registered = nil
		c.add(name, "registration", Problem, "no KubernetesCluster %s in %s on the management cluster: run relayctl register %s --context <mgmt> --remote-context %s", name, c.o.Server.Namespace, name, rm.Context)
	case err != nil:
		return fmt.Errorf("management cluster: failed to read KubernetesCluster %s: %w", name, err)
	default:
		st.Registered = true
		c.add(name, "registration", OK, "KubernetesCluster %s/%s", c.o.Server.Namespace, name)
	}

	root, rootKey, err := get(ag.RootTLSSecret)
	if err != nil {
		return err
	}
	tok, tokKey, err := get(ag.TokenSecret.SecretRef)
	if err != nil {
		return err
	}
	clientValid := false
	switch {
	case clientSecret == nil && (root == nil || tok == nil):
		c.add(name, "secret "+clientKey.String(), Problem, "not found, and the agent cannot bootstrap without %s and %s: run relayctl register %s, or provide the client certificate", rootKey, tokKey, name)
	case clientSecret == nil:
		c.add(name, "secret "+clientKey.String(), Warning, "not found yet: the agent creates it when it bootstraps with the token; check the agent's logs if this stays")
	default:
		if v, r := relaysecret.Validate(relaysecret.Client, clientSecret.Data, "", c.context(name)); v == nil {
			c.add(name, "secret "+clientKey.String(), Problem, "%v: delete the secret so that the agent bootstraps again, or reissue it from the management cluster's CA", r.Err())
		} else {
			exp := v.Cert.NotAfter
			st.ClientExpiry = &exp
			clientValid = exp.After(c.o.Now)
			c.expiry(name, "secret "+clientKey.String(), v.Cert)
			c.clientIssuerAdmitted(name, clientKey, own)
		}
	}
	if root != nil && len(c.roots) > 0 {
		m, r := relaysecret.Validate(relaysecret.Root, root.Data, "", relaysecret.Context{Now: c.o.Now})
		switch {
		case m == nil:
			c.add(name, "secret "+rootKey.String(), Problem, "%v", r.Err())
		case !slices.ContainsFunc(m.Roots, func(r *x509.Certificate) bool { return slices.ContainsFunc(c.roots, r.Equal) }):
			c.add(name, "secret "+rootKey.String(), Problem, "ca.crt is not the management cluster's root: the agent will not trust the server; run relayctl register %s --force", name)
		default:
			c.add(name, "secret "+rootKey.String(), OK, "same root as the management cluster")
		}
	}
	c.bootstrapToken(name, registered, tok, tokKey, clientValid)
	c.workloadCAKeys(ctx, name, rm, own.issuer)
	if err := c.webhook(ctx, name, rm.Client); err != nil {
		return err
	}
	c.clusterStreams(rm, registered, &st)
	c.r.Clusters = append(c.r.Clusters, st)
	return nil
}

// lookupSecret reads the secret key through c; a secret that does not
// exist is nil without an error. side names the cluster in errors.
func lookupSecret(ctx context.Context, c client.Client, key types.NamespacedName, side string) (*corev1.Secret, error) {
	var s corev1.Secret
	switch err := c.Get(ctx, key, &s); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("%s: failed to read secret %s: %w", side, key, err)
	}
	return &s, nil
}

// context is what a relay secret is checked in: the authority, cluster
// (for a client secret), the roots relay-server trusts, and the time.
func (c *checker) context(cluster string) relaysecret.Context {
	return relaysecret.Context{Authority: c.o.Server.Authority, Cluster: cluster, Roots: c.roots, RootsFrom: c.o.Server.RootTLSSecret.Name, Now: c.o.Now}
}

// expiry adds an OK finding with the time left, or a warning when less
// than warnLeft of the lifetime is left.
func (c *checker) expiry(cluster, check string, cert *x509.Certificate) {
	left := cert.NotAfter.Sub(c.o.Now)
	life := cert.NotAfter.Sub(cert.NotBefore)
	switch {
	case left <= 0:
		c.add(cluster, check, Problem, "expired at %s: renew or reissue it", cert.NotAfter.UTC().Format(time.RFC3339))
	case float64(left) < warnLeft*float64(life):
		c.add(cluster, check, Warning, "expires at %s, %s left: it should have been renewed; check whoever renews it", cert.NotAfter.UTC().Format(time.RFC3339), roundLeft(left))
	default:
		c.add(cluster, check, OK, "valid until %s (%s left)", cert.NotAfter.UTC().Format(time.RFC3339), roundLeft(left))
	}
}

func roundLeft(d time.Duration) string {
	if d > 48*time.Hour {
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	return d.Round(time.Second).String()
}

// webhook checks that the validating webhook configuration's caBundle
// verifies relay-webhook's serving certificate.
func (c *checker) webhook(ctx context.Context, cluster string, cl client.Client) error {
	w := c.o.Webhook
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	switch err := cl.Get(ctx, types.NamespacedName{Name: w.ValidatingConfiguration}, &vwc); {
	case apierrors.IsNotFound(err):
		c.add(cluster, "webhook", Warning, "ValidatingWebhookConfiguration %s not found: relay secrets are not checked on apply; install relay-webhook with the overlay", w.ValidatingConfiguration)
		return nil
	case err != nil:
		return fmt.Errorf("%s cluster: failed to read ValidatingWebhookConfiguration %s: %w", cluster, w.ValidatingConfiguration, err)
	}
	var serving []byte
	for _, name := range []string{w.CertificateSecret, "relay-webhook-cert-manager-tls"} {
		var s corev1.Secret
		if err := cl.Get(ctx, types.NamespacedName{Namespace: w.WebhookNamespace, Name: name}, &s); err == nil && len(s.Data[relaysecret.KeyTLSCert]) > 0 {
			serving = s.Data[relaysecret.KeyTLSCert]
			break
		}
	}
	if serving == nil {
		c.add(cluster, "webhook", Problem, "no serving certificate in %s/%s: is relay-webhook running? (kubectl -n %s get deploy relay-webhook)", w.WebhookNamespace, w.CertificateSecret, w.WebhookNamespace)
		return nil
	}
	certs, err := pki.DecodeCertificates(serving)
	if err != nil {
		c.add(cluster, "webhook", Problem, "serving certificate: %v", err)
		return nil
	}
	inter := x509.NewCertPool()
	for _, i := range certs[1:] {
		inter.AddCert(i)
	}
	for _, h := range vwc.Webhooks {
		pool := x509.NewCertPool()
		if len(h.ClientConfig.CABundle) == 0 || !pool.AppendCertsFromPEM(h.ClientConfig.CABundle) {
			c.add(cluster, "webhook", Problem, "webhook %s has no caBundle: the API server cannot call it; relay-webhook sets it when it starts (with cert-manager, check the cert-manager.io/inject-ca-from annotation)", h.Name)
			return nil
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: c.o.Now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			c.add(cluster, "webhook", Problem, "webhook %s: caBundle does not verify the serving certificate (%v): restart relay-webhook, which puts the right caBundle back", h.Name, err)
			return nil
		}
	}
	c.add(cluster, "webhook", OK, "caBundle of %s verifies the serving certificate", w.ValidatingConfiguration)
	return nil
}

// Text renders the report for people: a table of the clusters under a
// header, as kubectl prints lists, then every finding that is not OK (all
// of them with showOK), one a line.
func (r *Report) Text(showOK bool) string {
	var b strings.Builder
	if len(r.Clusters) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "CLUSTER\tREGISTERED\tPUSH\tPULL\tREPLICAS\tCLIENT CERT EXPIRES")
		for _, s := range r.Clusters {
			exp := "unknown"
			if s.ClientExpiry != nil {
				exp = s.ClientExpiry.UTC().Format(time.RFC3339)
			}
			on := "<none>"
			if len(s.Replicas) > 0 {
				on = replicaNames(s.Replicas)
			}
			fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%s\t%s\n", s.Name, s.Registered, s.Pushing, s.Pulling, on, exp)
		}
		_ = tw.Flush()
	}
	for _, f := range r.Findings {
		if f.Status == OK && !showOK {
			continue
		}
		fmt.Fprintf(&b, "%-7s %s: %s: %s\n", strings.ToUpper(string(f.Status)), f.Cluster, f.Check, f.Detail)
	}
	if n := r.Problems(); n > 0 {
		fmt.Fprintf(&b, "%d problem(s) found\n", n)
	} else {
		b.WriteString("no problems found\n")
	}
	return b.String()
}
