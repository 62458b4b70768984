package config

import (
	"net"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Defaults of relay-webhook.
const (
	DefaultWebhookNamespace     = "meshrelay-system"
	DefaultWebhookService       = "relay-webhook"
	DefaultWebhookSecret        = "relay-webhook-tls"
	DefaultWebhookListenAddress = ":9443"
	DefaultValidatingWebhook    = "meshrelay-validating"
	DefaultMutatingWebhook      = "meshrelay-mutating"
	DefaultIstioNamespace       = "istio-system"
	DefaultIstioCASecret        = "cacerts"
	DefaultAgentContainer       = "relay-agent"
)

// Certificate management modes of relay-webhook.
const (
	// CertificatesSelf: the webhook makes its CA and serving certificate,
	// patches caBundle into its configurations and rotates both.
	CertificatesSelf = "self"
	// CertificatesFiles: the serving certificate is read from certDir (for
	// example a cert-manager secret mounted there) and reloaded when it
	// changes; cert-manager's CA injector patches caBundle.
	CertificatesFiles = "files"
)

// Webhook is relay-webhook's configuration.
type Webhook struct {
	// Namespace holds the relay secrets the webhook checks.
	Namespace string `json:"namespace"`
	// Cluster is this workload cluster's name: a client certificate must be
	// for it, and agent pods get it. Empty on the management cluster.
	Cluster string `json:"cluster,omitempty"`
	// Authority is the SNI name a server certificate must cover.
	Authority string `json:"authority"`
	// ServerAddress is relay-server's host:port, given to agent pods.
	ServerAddress    string         `json:"serverAddress,omitempty"`
	RootTLSSecret    SecretRef      `json:"rootTlsSecret"`
	SigningTLSSecret SecretRef      `json:"signingTlsSecret"`
	TLSSecret        SecretRef      `json:"tlsSecret"`
	ClientTLSSecret  SecretRef      `json:"clientTlsSecret"`
	TokenSecret      TokenSecretRef `json:"tokenSecret"`
	// ClientTLSSecretRotationGracePeriodRatio: a certificate with less than
	// this fraction of its lifetime left is admitted with a warning.
	ClientTLSSecretRotationGracePeriodRatio float64 `json:"clientTlsSecretRotationGracePeriodRatio"`
	// IstioNamespace and IstioCASecret name Istio's plug-in CA secret.
	IstioNamespace string `json:"istioNamespace"`
	IstioCASecret  string `json:"istioCaSecret"`
	// AgentContainer is the container of an agent pod that gets the mounts
	// and settings; the first container when none has this name.
	AgentContainer string `json:"agentContainer"`

	// ListenAddress serves HTTPS admission reviews.
	ListenAddress string `json:"listenAddress"`
	// MetricsAddress serves /metrics, /healthz and /readyz.
	MetricsAddress string `json:"metricsAddress"`
	// Certificates is "self" (the default) or "files".
	Certificates string `json:"certificates"`
	// CertDir holds tls.crt and tls.key when Certificates is "files".
	CertDir string `json:"certDir,omitempty"`
	// WebhookNamespace is where the webhook runs: its Service and, with
	// self-managed certificates, its certificate secret.
	WebhookNamespace  string `json:"webhookNamespace"`
	ServiceName       string `json:"serviceName"`
	CertificateSecret string `json:"certificateSecret"`
	// ValidatingConfiguration and MutatingConfiguration are the webhook
	// configurations whose caBundle a self-managing webhook keeps current.
	ValidatingConfiguration string `json:"validatingConfiguration"`
	MutatingConfiguration   string `json:"mutatingConfiguration"`
	// EnableProfiling serves Go's profiles under /debug/pprof/ on the
	// metrics address.
	EnableProfiling bool `json:"enableProfiling"`
}

// DefaultWebhook returns relay-webhook's defaults: the documented secret names.
func DefaultWebhook() Webhook {
	return Webhook{
		Namespace:                               DefaultNamespace,
		Authority:                               DefaultAuthority,
		RootTLSSecret:                           SecretRef{Name: DefaultRootTLSSecret},
		SigningTLSSecret:                        SecretRef{Name: DefaultSigningTLSSecret},
		TLSSecret:                               SecretRef{Name: DefaultServerTLSSecret},
		ClientTLSSecret:                         SecretRef{Name: DefaultClientTLSSecret},
		TokenSecret:                             TokenSecretRef{SecretRef: SecretRef{Name: DefaultTokenSecret}, Key: DefaultTokenKey},
		ClientTLSSecretRotationGracePeriodRatio: DefaultRotationGracePeriodRatio,
		IstioNamespace:                          DefaultIstioNamespace,
		IstioCASecret:                           DefaultIstioCASecret,
		AgentContainer:                          DefaultAgentContainer,
		ListenAddress:                           DefaultWebhookListenAddress,
		MetricsAddress:                          DefaultMetricsAddress,
		Certificates:                            CertificatesSelf,
		WebhookNamespace:                        DefaultWebhookNamespace,
		ServiceName:                             DefaultWebhookService,
		CertificateSecret:                       DefaultWebhookSecret,
		ValidatingConfiguration:                 DefaultValidatingWebhook,
		MutatingConfiguration:                   DefaultMutatingWebhook,
	}
}

// BindWebhook binds w's settings to fs as flags, with w's current values as
// defaults.
func BindWebhook(fs *pflag.FlagSet, w *Webhook) {
	fs.StringVar(&w.Namespace, "namespace", w.Namespace, "namespace of the relay secrets to check")
	fs.StringVar(&w.Cluster, "cluster", w.Cluster, "this workload cluster's registered name: client certificates must be for it, agent pods get it; empty on the management cluster")
	fs.StringVar(&w.Authority, "authority", w.Authority, "SNI name a relay server certificate must cover (authority)")
	fs.StringVar(&w.ServerAddress, "server-address", w.ServerAddress, "relay-server host:port given to agent pods (serverAddress)")
	bindRef(fs, "root-tls-secret", "root CA secret (rootTlsSecret)", &w.RootTLSSecret)
	bindRef(fs, "signing-tls-secret", "intermediate CA secret (signingTlsSecret)", &w.SigningTLSSecret)
	bindRef(fs, "tls-secret", "server certificate secret (tlsSecret)", &w.TLSSecret)
	bindRef(fs, "client-tls-secret", "client certificate secret (clientTlsSecret)", &w.ClientTLSSecret)
	bindToken(fs, &w.TokenSecret)
	fs.Float64Var(&w.ClientTLSSecretRotationGracePeriodRatio, "client-tls-secret-rotation-grace-period-ratio", w.ClientTLSSecretRotationGracePeriodRatio, "warn when a certificate has less than this fraction of its lifetime left (clientTlsSecretRotationGracePeriodRatio)")
	fs.StringVar(&w.IstioNamespace, "istio-namespace", w.IstioNamespace, "namespace of Istio's plug-in CA secret")
	fs.StringVar(&w.IstioCASecret, "istio-ca-secret", w.IstioCASecret, "name of Istio's plug-in CA secret")
	fs.StringVar(&w.AgentContainer, "agent-container", w.AgentContainer, "container of an agent pod that gets the certificate mounts and settings")
	fs.StringVar(&w.ListenAddress, "listen-address", w.ListenAddress, "HTTPS address of the admission webhooks")
	fs.StringVar(&w.MetricsAddress, "metrics-address", w.MetricsAddress, "address of /metrics, /healthz and /readyz")
	fs.StringVar(&w.Certificates, "certificates", w.Certificates, `serving certificate: "self" makes and rotates its own and patches caBundle; "files" reads tls.crt and tls.key from --cert-dir (cert-manager)`)
	fs.StringVar(&w.CertDir, "cert-dir", w.CertDir, `folder holding tls.crt and tls.key with --certificates=files`)
	fs.StringVar(&w.WebhookNamespace, "webhook-namespace", w.WebhookNamespace, "namespace the webhook runs in: its Service and certificate secret")
	fs.StringVar(&w.ServiceName, "service-name", w.ServiceName, "the webhook's Service; the serving certificate covers <service>.<namespace>.svc")
	fs.StringVar(&w.CertificateSecret, "certificate-secret", w.CertificateSecret, "secret of the self-managed CA and serving certificate")
	fs.StringVar(&w.ValidatingConfiguration, "validating-configuration", w.ValidatingConfiguration, "ValidatingWebhookConfiguration whose caBundle is kept current")
	fs.StringVar(&w.MutatingConfiguration, "mutating-configuration", w.MutatingConfiguration, "MutatingWebhookConfiguration whose caBundle is kept current")
	fs.BoolVar(&w.EnableProfiling, "enable-profiling", w.EnableProfiling, "serve Go's profiles under /debug/pprof/ on the metrics address, unauthenticated: anyone who reaches that port can read them (off by default)")
}

// Validate returns every problem in w, each naming its setting and the fix.
func (w *Webhook) Validate() error {
	var errs field.ErrorList
	errs = append(errs, label(field.NewPath("namespace"), w.Namespace)...)
	if w.Cluster != "" {
		errs = append(errs, label(field.NewPath("cluster"), w.Cluster)...)
	}
	errs = append(errs, subdomain(field.NewPath("authority"), w.Authority)...)
	if w.ServerAddress != "" {
		if _, port, err := net.SplitHostPort(w.ServerAddress); err != nil || !validPort(port) {
			errs = append(errs, field.Invalid(field.NewPath("serverAddress"), w.ServerAddress, "must be host:port, for example gloo-mesh-mgmt-server.gloo-mesh:9900"))
		}
	}
	for _, ref := range []struct {
		path string
		ref  SecretRef
	}{{"rootTlsSecret", w.RootTLSSecret}, {"signingTlsSecret", w.SigningTLSSecret}, {"tlsSecret", w.TLSSecret}, {"clientTlsSecret", w.ClientTLSSecret}} {
		errs = append(errs, secretRef(field.NewPath(ref.path), ref.ref)...)
	}
	errs = append(errs, tokenRef(field.NewPath("tokenSecret"), w.TokenSecret)...)
	if r := w.ClientTLSSecretRotationGracePeriodRatio; !(r > 0 && r < 1) {
		errs = append(errs, field.Invalid(field.NewPath("clientTlsSecretRotationGracePeriodRatio"), r,
			"must be between 0 and 1, for example 0.1 warns when a tenth of the lifetime is left"))
	}
	errs = append(errs, label(field.NewPath("istioNamespace"), w.IstioNamespace)...)
	errs = append(errs, subdomain(field.NewPath("istioCaSecret"), w.IstioCASecret)...)
	errs = append(errs, label(field.NewPath("agentContainer"), w.AgentContainer)...)
	errs = append(errs, address(field.NewPath("listenAddress"), w.ListenAddress)...)
	errs = append(errs, address(field.NewPath("metricsAddress"), w.MetricsAddress)...)
	switch w.Certificates {
	case CertificatesSelf:
		errs = append(errs, label(field.NewPath("webhookNamespace"), w.WebhookNamespace)...)
		errs = append(errs, label(field.NewPath("serviceName"), w.ServiceName)...)
		errs = append(errs, subdomain(field.NewPath("certificateSecret"), w.CertificateSecret)...)
	case CertificatesFiles:
		if w.CertDir == "" {
			errs = append(errs, field.Required(field.NewPath("certDir"), "set it to the folder holding tls.crt and tls.key (--cert-dir), or use --certificates=self"))
		}
	default:
		errs = append(errs, field.NotSupported(field.NewPath("certificates"), w.Certificates, []string{CertificatesSelf, CertificatesFiles}))
	}
	return errs.ToAggregate()
}
