package app

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// apiServer starts an HTTPS server that answers every request with
// handler, and returns a kubeconfig whose context mgmt points at it.
func apiServer(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	return kubeconfigFor(t, srv.URL)
}

// kubeconfigFor writes a kubeconfig whose contexts mgmt and cluster-1
// point at server.
func kubeconfigFor(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	data := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts:
  - {name: mgmt, context: {cluster: c, user: u}}
  - {name: cluster-1, context: {cluster: c, user: u}}
current-context: mgmt
`, server)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// discovery is what an API server says it serves, enough for relayctl's
// clients to find secrets and KubernetesClusters.
var discovery = map[string]string{
	"/api":  `{"kind":"APIVersions","versions":["v1"]}`,
	"/apis": `{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"meshrelay.dev","versions":[{"groupVersion":"meshrelay.dev/v1alpha1","version":"v1alpha1"}],"preferredVersion":{"groupVersion":"meshrelay.dev/v1alpha1","version":"v1alpha1"}}]}`,
	"/api/v1": `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":[
		{"name":"secrets","singularName":"secret","namespaced":true,"kind":"Secret","verbs":["get","list","create","update"]},
		{"name":"namespaces","singularName":"namespace","namespaced":false,"kind":"Namespace","verbs":["get","create"]}]}`,
	"/apis/meshrelay.dev/v1alpha1": `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"meshrelay.dev/v1alpha1","resources":[
		{"name":"kubernetesclusters","singularName":"kubernetescluster","namespaced":true,"kind":"KubernetesCluster","verbs":["get","list","create","update"]},
		{"name":"relaytrusts","singularName":"relaytrust","namespaced":true,"kind":"RelayTrust","verbs":["get","list","create","patch"]}]}`,
}

// forbidden answers discovery, and every other request as an API server
// does to a user without the rights.
func forbidden(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if body, ok := discovery[r.URL.Path]; ok {
		fmt.Fprint(w, body)
		return
	}
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"%s is forbidden: User \"u\" cannot get resource"}`, r.URL.Path)
}

func TestExitStatusSaysWhetherTheCommandCouldRun(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none")
	refused := kubeconfigFor(t, "https://127.0.0.1:1")
	denied := apiServer(t, forbidden)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"an unknown flag could not run", []string{"check", "--no-such-flag"}, 2, "unknown flag: --no-such-flag (see relayctl check --help)"},
		{"an unknown command could not run", []string{"chek"}, 2, `unknown command "chek" for "relayctl"`},
		{"a missing argument could not run", []string{"register"}, 2, "accepts 1 arg(s), received 0"},
		{"a bad --request-timeout could not run", []string{"check", "--request-timeout", "soon"}, 2, `invalid --request-timeout "soon": give a duration with its unit (30s, 1m, 2h) or 0 for none`},
		{"a bad --dry-run could not run", []string{"revoke", "cluster-1", "--dry-run=maybe"}, 2, `invalid argument "maybe" for "--dry-run" flag: use none, client (print what would be written) or server`},
		{"a kubeconfig that does not exist could not run", []string{"check", "--kubeconfig", none}, 2, "failed to load the kubeconfig for the current context"},
		{"an unreachable cluster could not run", []string{"check", "--kubeconfig", refused, "--request-timeout", "5s"}, 2, "connection refused"},
		{"a forbidden cluster could not run", []string{"check", "--kubeconfig", denied, "--context", "mgmt"}, 2, "is forbidden"},
		{"revoke on a cluster that forbids it could not run", []string{"revoke", "cluster-1", "--kubeconfig", denied}, 2, "is forbidden"},
		{"rotate status on a cluster that forbids it could not run", []string{"rotate", "status", "--kubeconfig", denied}, 2, "is forbidden"},
		{"rotate root on a cluster that forbids it could not run", []string{"rotate", "root", "--kubeconfig", denied}, 2, "failed to read RelayTrust gloo-mesh/relay-server: /apis/meshrelay.dev/v1alpha1/namespaces/gloo-mesh/relaytrusts/relay-server is forbidden"},
		{"rotate status on an unreachable cluster could not run", []string{"rotate", "status", "--kubeconfig", refused, "--request-timeout", "5s"}, 2, "connection refused"},
		{"a validate that finds a broken input found problems", []string{"validate", "-f", none}, 1, "1 input error"},
		{"help is done", []string{"check", "--help"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args[0], tc.args[1:]...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("relayctl %s: exit %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
			}
		})
	}
}

// An API server that accepts requests and never answers must not hang
// check: --request-timeout bounds every request.
func TestRequestTimeoutBoundsEveryRequestToAClusterThatDoesNotAnswer(t *testing.T) {
	hang := make(chan struct{})
	kubeconfig := apiServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(hang) })

	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, _, stderr := runCLI(t, "check", "--kubeconfig", kubeconfig, "--remote-context", "cluster-1", "--request-timeout", "1s")
		done <- result{code, stderr}
	}()
	select {
	case r := <-done:
		if r.code != 2 || !regexp.MustCompile(`(Client\.Timeout|context deadline) exceeded`).MatchString(r.stderr) {
			t.Errorf("check against a cluster that does not answer: exit %d, stderr %q; want 2 and the timeout", r.code, r.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("check still waits for a cluster that does not answer after 30s, with --request-timeout 1s")
	}
}

func TestRequestTimeoutTakesKubectlsFormat(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "": 0, "30s": 30 * time.Second, "1m": time.Minute, "2h": 2 * time.Hour, "45": 45 * time.Second} {
		if got, err := parseRequestTimeout(in); err != nil || got != want {
			t.Errorf("--request-timeout %q = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"soon", "-1s", "1 m"} {
		if _, err := parseRequestTimeout(in); err == nil {
			t.Errorf("--request-timeout %q is accepted", in)
		}
	}
}
