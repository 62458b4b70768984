package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestDefaultsFollowTheReferenceAndValidate(t *testing.T) {
	s := DefaultServer()
	if err := s.Validate(); err != nil {
		t.Errorf("DefaultServer().Validate() = %v", err)
	}
	if s.TokenSecret.Name != "relay-identity-token-secret" || s.TokenSecret.Key != "token" || s.Authority != "gloo-mesh-mgmt-server.gloo-mesh" {
		t.Errorf("server defaults differ from the documented secret names and authority: %+v", s)
	}
	if s.ClientCertificateTTL.Duration != 365*24*time.Hour {
		t.Errorf("client certificate TTL = %s, want one year", s.ClientCertificateTTL.Duration)
	}
	a := DefaultAgent()
	a.Cluster, a.ServerAddress = "cluster-1", "relay.example.com:9900"
	if err := a.Validate(); err != nil {
		t.Errorf("DefaultAgent() with cluster and server address: Validate() = %v", err)
	}
	if a.ClientTLSSecret.NamespacedName("gloo-mesh").Namespace != "gloo-mesh" || (SecretRef{Name: "x", Namespace: "other"}).NamespacedName("gloo-mesh").String() != "other/x" {
		t.Error("SecretRef.NamespacedName does not default to the component namespace")
	}
}

func TestValidateNamesTheSettingAndTheFix(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(*Server, *Agent)
		server bool
		want   string
	}{
		{"an agent without a cluster name is refused", func(_ *Server, a *Agent) { a.Cluster = "" }, false, "cluster: Required value: set it to this workload cluster's registered name"},
		{"a cluster name with an underscore is named as such", func(_ *Server, a *Agent) { a.Cluster = "cluster_1" }, false, `contains an underscore, which DNS-1123 names do not allow: use "cluster-1"`},
		{"an agent without a server address is refused", func(_ *Server, a *Agent) { a.ServerAddress = "" }, false, "serverAddress: Required value"},
		{"a server address without a port is refused", func(_ *Server, a *Agent) { a.ServerAddress = "relay.example.com" }, false, "serverAddress: Invalid value"},
		{"a grace ratio of 1 is refused", func(_ *Server, a *Agent) { a.ClientTLSSecretRotationGracePeriodRatio = 1 }, false, "clientTlsSecretRotationGracePeriodRatio: Invalid value: 1: must be between 0 and 1"},
		{"a grace ratio of 0 is refused", func(_ *Server, a *Agent) { a.ClientTLSSecretRotationGracePeriodRatio = 0 }, false, "must be between 0 and 1"},
		{"an empty token key is refused", func(_ *Server, a *Agent) { a.TokenSecret.Key = "" }, false, "tokenSecret.key"},
		{"an uppercase secret name is refused", func(s *Server, _ *Agent) { s.TLSSecret.Name = "Relay" }, true, "tlsSecret.name"},
		{"a secret namespace that is not a label is refused", func(s *Server, _ *Agent) { s.RootTLSSecret.Namespace = "a.b" }, true, "rootTlsSecret.namespace"},
		{"an authority with an underscore is named as such", func(s *Server, _ *Agent) { s.Authority = "mgmt_server.gloo-mesh" }, true, "authority: Invalid value"},
		{"a client TTL under a minute is refused", func(s *Server, _ *Agent) { s.ClientCertificateTTL.Duration = time.Second }, true, "clientCertificateTTL: Invalid value: \"1s\": must be at least 1m0s"},
		{"a listen address without a port is refused", func(s *Server, _ *Agent) { s.ListenAddress = "9900" }, true, "listenAddress"},
		{"a metrics port out of range is refused", func(s *Server, _ *Agent) { s.MetricsAddress = ":70000" }, true, "metricsAddress"},
		{"a concurrency cap of zero is refused", func(s *Server, _ *Agent) { s.MaxConcurrentSigning = 0 }, true, "maxConcurrentSigning"},
		{"a zero signing rate is refused", func(s *Server, _ *Agent) { s.PeerSigningRate = 0 }, true, "peerSigningRate"},
		{"a zero burst is refused", func(s *Server, _ *Agent) { s.PeerSigningBurst = 0 }, true, "peerSigningBurst"},
		{"a namespace that is not a label is refused", func(s *Server, _ *Agent) { s.Namespace = "" }, true, "namespace: Invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, a := DefaultServer(), DefaultAgent()
			a.Cluster, a.ServerAddress = "cluster-1", "relay.example.com:9900"
			tc.edit(&s, &a)
			var err error
			if tc.server {
				err = s.Validate()
			} else {
				err = a.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestFlagsWinOverTheFileAndTheFileOverDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	file := `cluster: from-file
serverAddress: file.example.com:9900
clientTlsSecretRotationGracePeriodRatio: 0.25
tokenSecret:
  name: file-token
  key: token
`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	a := DefaultAgent()
	fs := pflag.NewFlagSet("relay-agent", pflag.ContinueOnError)
	BindAgent(fs, &a)
	if err := fs.Parse([]string{"--cluster", "from-flag", "--token-secret-key", "tok"}); err != nil {
		t.Fatal(err)
	}
	if err := Load(fs, path, &a); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if a.Cluster != "from-flag" {
		t.Errorf("cluster = %q, want the flag's from-flag", a.Cluster)
	}
	if a.ServerAddress != "file.example.com:9900" || a.ClientTLSSecretRotationGracePeriodRatio != 0.25 || a.TokenSecret.Name != "file-token" {
		t.Errorf("file settings not applied: %+v", a)
	}
	if a.TokenSecret.Key != "tok" {
		t.Errorf("tokenSecret.key = %q, want the flag's tok", a.TokenSecret.Key)
	}
	if a.Authority != DefaultAuthority {
		t.Errorf("authority = %q, want the default kept", a.Authority)
	}
}

func TestLoadRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"a misspelt key is named", "clusterName: x\n", `unknown field "clusterName"`},
		{"a value of the wrong type is refused", "leaderElection: maybe\n", "failed to parse config"},
		{"a file over the size bound is refused", strings.Repeat("#", MaxFileBytes+1), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			a := DefaultAgent()
			fs := pflag.NewFlagSet("relay-agent", pflag.ContinueOnError)
			BindAgent(fs, &a)
			err := Load(fs, path, &a)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("Load = %v, want it to name %s and contain %q", err, path, tc.want)
			}
		})
	}
	a := DefaultAgent()
	if err := Load(pflag.NewFlagSet("x", pflag.ContinueOnError), filepath.Join(dir, "missing.yaml"), &a); err == nil || !strings.Contains(err.Error(), "failed to open config file") {
		t.Errorf("Load of a missing file = %v", err)
	}
	if err := Load(pflag.NewFlagSet("x", pflag.ContinueOnError), "", &a); err != nil {
		t.Errorf("Load with no file = %v, want nil", err)
	}
}

func TestServerFlagsBindEverySetting(t *testing.T) {
	s := DefaultServer()
	fs := pflag.NewFlagSet("relay-server", pflag.ContinueOnError)
	BindServer(fs, &s)
	args := []string{"--disable-ca", "--disable-ca-cert-generation", "--disable-token-generation", "--signing-tls-secret", "sign",
		"--tls-secret", "srv", "--root-tls-secret", "root", "--token-secret", "tok", "--token-secret-namespace", "other",
		"--authority", "relay.example.com", "--insecure", "--client-certificate-ttl", "2h"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if !s.DisableCa || !s.DisableCaCertGeneration || !s.DisableTokenGeneration || !s.Insecure ||
		s.SigningTLSSecret.Name != "sign" || s.TLSSecret.Name != "srv" || s.RootTLSSecret.Name != "root" ||
		s.TokenSecret.Name != "tok" || s.TokenSecret.NamespacedName("gloo-mesh").Namespace != "other" || s.Authority != "relay.example.com" ||
		s.ClientCertificateTTL.Duration != 2*time.Hour {
		t.Errorf("flags not bound: %+v", s)
	}
}

func TestApplyEnvironmentSetsWhatTheInjectorGives(t *testing.T) {
	a := DefaultAgent()
	env := map[string]string{EnvCluster: "cluster-1", EnvServerAddress: "relay.example:9900"}
	a.ApplyEnvironment(func(k string) string { return env[k] })
	if a.Cluster != "cluster-1" || a.ServerAddress != "relay.example:9900" {
		t.Errorf("cluster %q, server address %q: want the environment's", a.Cluster, a.ServerAddress)
	}
	if a.Authority != DefaultAuthority {
		t.Errorf("authority %q changed though %s is unset", a.Authority, EnvAuthority)
	}
}

func TestWebhookApplyEnvironmentTakesTheWorkloadSettings(t *testing.T) {
	w := DefaultWebhook()
	env := map[string]string{EnvCluster: "cluster-2", EnvAuthority: "relay.example.com"}
	w.ApplyEnvironment(func(k string) string { return env[k] })
	if w.Cluster != "cluster-2" || w.Authority != "relay.example.com" {
		t.Errorf("cluster %q, authority %q: want the environment's", w.Cluster, w.Authority)
	}
	if w.ServerAddress != DefaultWebhook().ServerAddress {
		t.Errorf("server address %q changed though %s is unset", w.ServerAddress, EnvServerAddress)
	}
}
