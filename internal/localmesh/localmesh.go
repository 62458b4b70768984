// Package localmesh runs meshrelay the way users install it, on local
// clusters: the overlays applied with kubectl, and relay-server,
// relay-webhook and relay-agent as local processes (no container runtime
// runs their Deployments here) with the command, args and environment of
// their rendered Deployments and their ServiceAccounts' tokens, so that a
// wrong flag or a missing RBAC rule in the manifests fails. The
// end-to-end suite and make demo use it.
package localmesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Binaries are the commands BuildBinaries builds.
var Binaries = []string{"relay-server", "relay-agent", "relay-webhook", "relayctl"}

// BuildBinaries builds the commands of the repository at root into dir.
func BuildBinaries(ctx context.Context, root, dir string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, n := range Binaries {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// Mesh is a set of local clusters with meshrelay installed.
type Mesh struct {
	Env  *testenv.Env
	Root string
	Bins string
	Dir  string
	// ServerAddr is relay-server's gRPC address, ServerMetrics its
	// metrics address (host:port).
	ServerAddr, ServerMetrics string
	// WebhookMetrics is each cluster's relay-webhook metrics address
	// (host:port), set by StartWebhook.
	WebhookMetrics map[string]string
	processes      []*testenv.Process
	// rendered holds, per cluster, the objects Install last applied.
	rendered map[string][]*unstructured.Unstructured
}

// New returns a mesh over env; binaries are in bins, logs and generated
// overlays go to dir.
func New(env *testenv.Env, root, bins, dir string) *Mesh {
	return &Mesh{Env: env, Root: root, Bins: bins, Dir: dir}
}

// Install applies overlay (relative to manifests/overlays) to cluster.
// settings, when not empty, replace values of the workload settings.env
// (MESHRELAY_CLUSTER and the like). The webhook configurations are pointed
// at webhookAddr, where relay-webhook runs as a local process, instead of
// its in-cluster Service.
func (m *Mesh) Install(ctx context.Context, cluster, overlay string, settings map[string]string, webhookAddr string) error {
	return m.InstallPatched(ctx, cluster, overlay, settings, nil, webhookAddr)
}

// Patch is a kustomize patch of the objects of Kind named Name: a strategic
// merge patch, or a JSON 6902 patch (a list of operations).
type Patch struct {
	Kind, Name, Patch string
}

// InstallPatched is Install with patches on top of the overlay, for a test
// that applies what users apply with one change, such as certificate
// lifetimes short enough to watch renewals.
func (m *Mesh) InstallPatched(ctx context.Context, cluster, overlay string, settings map[string]string, patches []Patch, webhookAddr string) error {
	return m.InstallComponents(ctx, cluster, overlay, settings, nil, patches, webhookAddr)
}

// InstallComponents is InstallPatched with components (relative to
// manifests/components, such as istio-federated-trust) added to the
// overlay, as users add them to its kustomization.
func (m *Mesh) InstallComponents(ctx context.Context, cluster, overlay string, settings map[string]string, components []string, patches []Patch, webhookAddr string) error {
	dir := filepath.Join(m.Root, "manifests", "overlays", overlay)
	if len(settings) > 0 || len(patches) > 0 || len(components) > 0 {
		var err error
		if dir, err = m.settingsOverlay(cluster, dir, settings, components, patches); err != nil {
			return err
		}
	}
	out, _, err := m.Env.Kubectl(ctx, "", "kustomize", dir)
	if err != nil {
		return err
	}
	if err := m.InstallRendered(ctx, cluster, out, webhookAddr); err != nil {
		return fmt.Errorf("overlay %s: %w", overlay, err)
	}
	return nil
}

// InstallRendered applies stream, the objects of a rendering (kubectl
// kustomize, helm template), to cluster, its webhook configurations
// pointed at webhookAddr, and keeps its objects: StartServer,
// StartWebhook and StartAgent then run the binaries as its Deployments
// say.
func (m *Mesh) InstallRendered(ctx context.Context, cluster, stream, webhookAddr string) error {
	docs, err := PointWebhooksAt(stream, webhookAddr)
	if err != nil {
		return err
	}
	objs, err := Objects(docs)
	if err != nil {
		return err
	}
	if _, _, err = m.Env.Kubectl(ctx, docs, "--context", cluster, "apply", "-f", "-"); err != nil {
		return err
	}
	if m.rendered == nil {
		m.rendered = map[string][]*unstructured.Unstructured{}
	}
	m.rendered[cluster] = objs
	return nil
}

// settingsOverlay writes an overlay of base that replaces settings in the
// generated meshrelay-settings ConfigMaps and adds components and patches.
func (m *Mesh) settingsOverlay(cluster, base string, settings map[string]string, components []string, patches []Patch) (string, error) {
	dir := filepath.Join(m.Dir, "overlays", cluster)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		return "", err
	}
	var lits []string
	for k, v := range settings {
		lits = append(lits, fmt.Sprintf("%s=%s", k, v))
	}
	slices.Sort(lits)
	var b strings.Builder
	fmt.Fprintf(&b, "resources:\n  - %s\n", rel)
	if len(components) > 0 {
		b.WriteString("components:\n")
		for _, c := range components {
			crel, err := filepath.Rel(dir, filepath.Join(m.Root, "manifests", "components", c))
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "  - %s\n", crel)
		}
	}
	if len(lits) > 0 {
		b.WriteString("configMapGenerator:\n")
		for _, ns := range []string{"gloo-mesh", "meshrelay-system"} {
			fmt.Fprintf(&b, "  - name: meshrelay-settings\n    namespace: %s\n    behavior: merge\n    literals: [%s]\n", ns, strings.Join(lits, ", "))
		}
	}
	if _, ok := settings[config.EnvCluster]; ok {
		// What editing settings.env does to the cert-manager overlay: its
		// component copies the name into the client Certificate, but in the
		// overlay's own build, before this merge; a no-op where there is no
		// such Certificate.
		b.WriteString(clusterNameReplacement)
	}
	if len(patches) > 0 {
		b.WriteString("patches:\n")
		for _, p := range patches {
			fmt.Fprintf(&b, "  - target: {kind: %s, name: %s}\n    patch: |-\n", p.Kind, p.Name)
			for line := range strings.Lines(strings.TrimRight(p.Patch, "\n") + "\n") {
				b.WriteString("      " + line)
			}
		}
	}
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(b.String()), 0o644)
}

// clusterNameReplacement copies the merged cluster name into the client
// Certificate's DNS name, as components/cert-manager-client does.
const clusterNameReplacement = `replacements:
  - source: {kind: ConfigMap, name: meshrelay-settings, namespace: gloo-mesh, fieldPath: data.` + config.EnvCluster + `}
    targets:
      - select: {kind: Certificate, name: relay-client-tls}
        fieldPaths: [spec.dnsNames.0]
`

// Objects decodes a multi-document YAML stream, such as kubectl
// kustomize prints, into objects; empty documents are left out.
func Objects(stream string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, doc := range strings.Split(stream, "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// PointWebhooksAt turns each webhook's clientConfig in stream from the
// in-cluster Service into the URL of a webhook at addr (host:port), for a
// relay-webhook that runs as a local process.
func PointWebhooksAt(stream, addr string) (string, error) {
	objs, err := Objects(stream)
	if err != nil {
		return "", err
	}
	out := make([]string, len(objs))
	for i, u := range objs {
		if k := u.GetKind(); k == "ValidatingWebhookConfiguration" || k == "MutatingWebhookConfiguration" {
			hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
			for _, h := range hooks {
				h := h.(map[string]any)
				path, _, _ := unstructured.NestedString(h, "clientConfig", "service", "path")
				h["clientConfig"] = map[string]any{"url": "https://" + addr + path}
			}
			if err := unstructured.SetNestedSlice(u.Object, hooks, "webhooks"); err != nil {
				return "", err
			}
		}
		data, err := yaml.Marshal(u.Object)
		if err != nil {
			return "", err
		}
		out[i] = string(data)
	}
	return strings.Join(out, "---\n"), nil
}

// ClientSecretFor returns relay-client-tls-secret as a manifest holding a
// client certificate for name, signed by relay-server's signing CA on the
// management cluster mgmt: applied on a workload cluster of another name,
// it is one the webhook must deny.
func (m *Mesh) ClientSecretFor(ctx context.Context, mgmt, name string) (string, error) {
	var signing corev1.Secret
	key := types.NamespacedName{Namespace: config.DefaultNamespace, Name: config.DefaultSigningTLSSecret}
	if err := m.Env.Cluster(mgmt).Client.Get(ctx, key, &signing); err != nil {
		return "", fmt.Errorf("failed to read secret %s: %w", key, err)
	}
	ca, errs := relaysecret.Decode(relaysecret.Signing, signing.Data, "")
	if len(errs) > 0 {
		return "", fmt.Errorf("secret %s: %s", key, relaysecret.Message(errs))
	}
	cert, err := ca.Certified().IssueClient(pki.Options{DNSNames: []string{name}, TTL: time.Hour})
	if err != nil {
		return "", err
	}
	keyPEM, err := cert.KeyPEM()
	if err != nil {
		return "", err
	}
	doc, err := yaml.Marshal(&corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: config.DefaultClientTLSSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{relaysecret.KeyTLSCert: cert.CertPEM(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: cert.CAPEM()},
	})
	return string(doc), err
}

// Start runs binary name of the mesh's binaries with args, its output in
// a log file under Dir.
func (m *Mesh) Start(name, logName string, args ...string) (*testenv.Process, error) {
	p, err := testenv.StartProcess(filepath.Join(m.Bins, name), filepath.Join(m.Dir, logName+".log"), args...)
	if err != nil {
		return nil, err
	}
	m.processes = append(m.processes, p)
	return p, nil
}

// StartServer runs relay-server on the management cluster mgmt and waits
// until it is ready. Where an overlay is installed on mgmt, it runs as
// that rendering's Deployment says (StartDeployment), with its own
// listen and metrics addresses; extra flags come last. On a cluster where
// nothing was installed (a test that sets up by hand), it runs with the
// mesh's admin kubeconfig.
func (m *Mesh) StartServer(ctx context.Context, mgmt string, extra ...string) (*testenv.Process, error) {
	var err error
	if m.ServerAddr == "" {
		if m.ServerAddr, err = testenv.FreeAddr(); err != nil {
			return nil, err
		}
		if m.ServerMetrics, err = testenv.FreeAddr(); err != nil {
			return nil, err
		}
	}
	addrs := []string{"--listen-address", m.ServerAddr, "--metrics-address", m.ServerMetrics}
	var p *testenv.Process
	if dep, ok := m.runs(mgmt, "relay-server"); ok {
		p, _, err = m.StartDeployment(ctx, mgmt, dep, Local{Pod: podName(dep, 0), LogName: "relay-server", Flags: addrs, Extra: extra})
	} else {
		p, err = m.Start("relay-server", "relay-server", append(append([]string{"--kubeconfig", m.Env.Kubeconfig, "--context", mgmt}, addrs...), extra...)...)
	}
	if err != nil {
		return nil, err
	}
	return p, m.waitReady(ctx, p, "http://"+m.ServerMetrics+"/readyz")
}

// StartWebhook runs relay-webhook for cluster at addr and waits until it
// is ready. name is the workload cluster's registered name, empty on the
// management cluster. Where an overlay is installed on cluster, it runs
// as that rendering's Deployment says (StartDeployment), with its own
// listen and metrics addresses, relay-server's address, and a serving
// certificate that covers 127.0.0.1: made by itself (--serving-ip), or,
// for a Deployment that serves cert-manager's secret, a local pair in
// place of the mounted one, whose CA goes into the webhook
// configurations' caBundle. Elsewhere it runs with the admin kubeconfig.
func (m *Mesh) StartWebhook(ctx context.Context, cluster, name, addr string) (*testenv.Process, error) {
	metrics, err := testenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	logName := "relay-webhook-" + cluster
	var p *testenv.Process
	if dep, ok := m.runs(cluster, "relay-webhook"); ok {
		pod, err := PodOf(m.rendered[cluster], dep, podName(dep, 0))
		if err != nil {
			return nil, err
		}
		flags := []string{"--listen-address", addr, "--metrics-address", metrics}
		if servesFromFiles(pod) == "" {
			flags = append(flags, "--serving-ip", "127.0.0.1")
		}
		if name != "" {
			if envValueOf(pod.Env, config.EnvCluster) != name {
				flags = append(flags, "--cluster", name)
			}
			if m.ServerAddr != "" {
				flags = append(flags, "--server-address", m.ServerAddr)
			}
		}
		c := m.Env.Cluster(cluster)
		prepare := func(pod *Pod) error {
			if dir := servesFromFiles(pod); dir != "" {
				return localServingPair(ctx, c.Client, m.rendered[cluster], dir)
			}
			return nil
		}
		p, _, err = m.StartDeployment(ctx, cluster, dep, Local{Pod: pod.Name, LogName: logName, Flags: flags, Prepare: prepare})
		if err != nil {
			return nil, err
		}
	} else {
		args := []string{"--kubeconfig", m.Env.Kubeconfig, "--context", cluster,
			"--listen-address", addr, "--metrics-address", metrics, "--serving-ip", "127.0.0.1"}
		if name != "" {
			args = append(args, "--cluster", name, "--server-address", m.ServerAddr)
		}
		if p, err = m.Start("relay-webhook", logName, args...); err != nil {
			return nil, err
		}
	}
	if m.WebhookMetrics == nil {
		m.WebhookMetrics = map[string]string{}
	}
	m.WebhookMetrics[cluster] = metrics
	return p, m.waitReady(ctx, p, "http://"+metrics+"/readyz")
}

// waitReady waits until p answers url. A process that exited before it
// was ready is forgotten, so that Stop does not report again the failure
// the returned error already says.
func (m *Mesh) waitReady(ctx context.Context, p *testenv.Process, url string) error {
	err := testenv.WaitReady(ctx, p, url, time.Minute)
	if exited, _ := p.Exited(); exited && err != nil {
		m.processes = slices.DeleteFunc(m.processes, func(q *testenv.Process) bool { return q == p })
	}
	return err
}

// StartAgent runs relay-agent in cluster for registered name, with its
// metrics on a free address it returns. Where an overlay is installed on
// cluster, it runs as that rendering's Deployment says (StartDeployment),
// with its own metrics address, relay-server's address, and --cluster
// only when name is not the one its settings give; extra flags come last.
// Elsewhere it runs with the admin kubeconfig.
func (m *Mesh) StartAgent(cluster, name string, extra ...string) (*testenv.Process, string, error) {
	metrics, err := testenv.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	logName := "relay-agent-" + cluster
	dep, ok := m.runs(cluster, "relay-agent")
	if !ok {
		args := append([]string{"--kubeconfig", m.Env.Kubeconfig, "--context", cluster,
			"--cluster", name, "--server-address", m.ServerAddr, "--metrics-address", metrics}, extra...)
		p, err := m.Start("relay-agent", logName, args...)
		return p, metrics, err
	}
	pod, err := PodOf(m.rendered[cluster], dep, podName(dep, 0))
	if err != nil {
		return nil, "", err
	}
	flags := []string{"--metrics-address", metrics}
	if m.ServerAddr != "" {
		flags = append(flags, "--server-address", m.ServerAddr)
	}
	if envValueOf(pod.Env, config.EnvCluster) != name {
		flags = append(flags, "--cluster", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), mountWait+30*time.Second)
	defer cancel()
	p, _, err := m.StartDeployment(ctx, cluster, dep, Local{Pod: pod.Name, LogName: logName, Flags: flags, Extra: extra})
	return p, metrics, err
}

// Relayctl runs relayctl with the mesh's kubeconfig and returns its output
// and exit status.
func (m *Mesh) Relayctl(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	cmd := exec.CommandContext(ctx, filepath.Join(m.Bins, "relayctl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+m.Env.Kubeconfig)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		}
	}
	return out.String(), errb.String(), code
}

// Stop stops every process the mesh started, the last started first.
func (m *Mesh) Stop() error {
	var errs []error
	for i := len(m.processes) - 1; i >= 0; i-- {
		errs = append(errs, m.processes[i].Stop())
	}
	m.processes = nil
	return errors.Join(errs...)
}
