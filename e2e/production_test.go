package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// appLabels are the app.kubernetes.io labels every object carries.
var appLabels = []string{"name", "instance", "version", "component", "part-of", "managed-by"}

// selectors are the Deployments' spec.selector as released: immutable, so
// no change to the manifests may touch them.
var selectors = map[string]map[string]string{
	"gloo-mesh-mgmt-server": {"app.kubernetes.io/name": "relay-server"},
	"relay-webhook":         {"app.kubernetes.io/name": "relay-webhook"},
	"relay-agent":           {"app.kubernetes.io/name": "relay-agent"},
}

// Ports of the binaries: what agents and the API server must reach, and
// metrics, which only monitoring may.
const (
	grpcPort    = 9900
	webhookPort = 9443
	metricsPort = 9091
)

// openPorts are, per Deployment, the ports open to every source.
var openPorts = map[string][]int{
	"gloo-mesh-mgmt-server": {grpcPort},
	"relay-webhook":         {webhookPort},
	"relay-agent":           nil,
}

func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &out); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return &out
}

func ofKind[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) []*T {
	t.Helper()
	var out []*T
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, typed[T](t, o))
		}
	}
	return out
}

// checkLabels fails t for each of appLabels that set lacks, and for
// part-of, managed-by and version values other than meshrelay, kustomize
// and version.
func checkLabels(t *testing.T, what string, set map[string]string, version string) {
	t.Helper()
	for _, k := range appLabels {
		if set["app.kubernetes.io/"+k] == "" {
			t.Errorf("%s lacks label app.kubernetes.io/%s: %v", what, k, set)
		}
	}
	for k, want := range map[string]string{"part-of": "meshrelay", "managed-by": "kustomize", "version": version} {
		if got := set["app.kubernetes.io/"+k]; got != want {
			t.Errorf("%s: app.kubernetes.io/%s=%q, want %q", what, k, got, want)
		}
	}
}

// checkProductionReady fails t for each object of overlay without the
// app.kubernetes.io label set, and for each Deployment whose selector
// changed, or that lacks a PodDisruptionBudget that selects its pods and
// lets one go, topology spread over nodes and zones, or a NetworkPolicy
// that opens only its serving port to all and metrics only to monitoring
// namespaces; relay-webhook must also run with a PriorityClass of the
// overlay.
func checkProductionReady(t *testing.T, overlay string, objs []*unstructured.Unstructured) {
	t.Helper()
	deployments := ofKind[appsv1.Deployment](t, objs, "Deployment")
	if len(deployments) == 0 {
		t.Fatalf("%s: no Deployment", overlay)
	}
	image := deployments[0].Spec.Template.Spec.Containers[0].Image
	version := image[strings.LastIndex(image, ":")+1:]
	for _, o := range objs {
		checkLabels(t, fmt.Sprintf("%s: %s %s", overlay, o.GetKind(), o.GetName()), o.GetLabels(), version)
	}
	pdbs := ofKind[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
	policies := ofKind[networkingv1.NetworkPolicy](t, objs, "NetworkPolicy")
	classes := ofKind[schedulingv1.PriorityClass](t, objs, "PriorityClass")
	for _, d := range deployments {
		what := fmt.Sprintf("%s: Deployment %s", overlay, d.Name)
		pods := labels.Set(d.Spec.Template.Labels)
		checkLabels(t, what+" pod template", pods, version)
		if want, ok := selectors[d.Name]; !ok || d.Spec.Selector == nil || !maps.Equal(d.Spec.Selector.MatchLabels, want) || len(d.Spec.Selector.MatchExpressions) > 0 {
			t.Errorf("%s: selector %v, want the released %v (spec.selector is immutable)", what, d.Spec.Selector, want)
		}
		if image := d.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(image, ":"+version) {
			t.Errorf("%s: image %s, want tag %s like app.kubernetes.io/version", what, image, version)
		}

		budgets := 0
		for _, p := range pdbs {
			if p.Namespace != d.Namespace || !selects(t, p.Spec.Selector, pods) {
				continue
			}
			budgets++
			one := intstr.FromInt32(1)
			if !(p.Spec.MaxUnavailable != nil && *p.Spec.MaxUnavailable == one) && !(p.Spec.MinAvailable != nil && *p.Spec.MinAvailable == one) {
				t.Errorf("%s: budget %s allows neither maxUnavailable 1 nor minAvailable 1", what, p.Name)
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
				t.Errorf("%s: %v replicas under budget %s: a drain could never evict the only one", what, d.Spec.Replicas, p.Name)
			}
		}
		if budgets != 1 {
			t.Errorf("%s: %d PodDisruptionBudgets select its pods, want 1", what, budgets)
		}

		keys := map[string]bool{}
		for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
			if c.WhenUnsatisfiable != corev1.ScheduleAnyway || !selects(t, c.LabelSelector, pods) {
				t.Errorf("%s: spread over %s is %s or does not select its pods (%v)", what, c.TopologyKey, c.WhenUnsatisfiable, c.LabelSelector)
				continue
			}
			keys[c.TopologyKey] = true
		}
		for _, k := range []string{corev1.LabelHostname, corev1.LabelTopologyZone} {
			if !keys[k] {
				t.Errorf("%s: no topology spread over %s", what, k)
			}
		}

		checkNetworkPolicy(t, what, d, pods, policies)

		if d.Name != "relay-webhook" {
			continue
		}
		pc := d.Spec.Template.Spec.PriorityClassName
		i := slices.IndexFunc(classes, func(c *schedulingv1.PriorityClass) bool { return c.Name == pc })
		switch {
		case pc == "" || i < 0:
			t.Errorf("%s: priority class %q, want one the overlay defines (%d defined)", what, pc, len(classes))
		case classes[i].Value < 1000000 || classes[i].Value > 1000000000 || classes[i].GlobalDefault:
			t.Errorf("%s: PriorityClass %s value %d (global default %v), want a high value below the system classes, not the default", what, pc, classes[i].Value, classes[i].GlobalDefault)
		}
	}
}

// checkNetworkPolicy fails t unless the policies selecting d's pods admit
// exactly d's open ports from every source and its metrics port only from
// namespaces picked by a label, and leave egress open.
func checkNetworkPolicy(t *testing.T, what string, d *appsv1.Deployment, pods labels.Set, policies []*networkingv1.NetworkPolicy) {
	t.Helper()
	var open []int
	metricsFrom := 0
	selected := 0
	for _, p := range policies {
		if p.Namespace != d.Namespace || !selects(t, &p.Spec.PodSelector, pods) {
			continue
		}
		selected++
		if slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			t.Errorf("%s: NetworkPolicy %s restricts egress; it must stay open", what, p.Name)
		}
		for _, rule := range p.Spec.Ingress {
			for _, port := range rule.Ports {
				n := int(port.Port.IntVal)
				switch {
				case len(rule.From) == 0:
					open = append(open, n)
				case n == metricsPort:
					for _, from := range rule.From {
						if from.NamespaceSelector == nil || len(from.NamespaceSelector.MatchLabels) == 0 || from.PodSelector != nil || from.IPBlock != nil {
							t.Errorf("%s: metrics from %+v, want namespaces picked by a label", what, from)
							continue
						}
						metricsFrom++
					}
				}
			}
		}
	}
	if selected == 0 {
		t.Errorf("%s: no NetworkPolicy selects its pods", what)
		return
	}
	slices.Sort(open)
	if !slices.Equal(open, openPorts[d.Name]) {
		t.Errorf("%s: ports open to all %v, want %v", what, open, openPorts[d.Name])
	}
	if metricsFrom == 0 {
		t.Errorf("%s: metrics port %d open to no monitoring namespace", what, metricsPort)
	}
}

func selects(t *testing.T, ls *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	if ls == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Errorf("selector %v: %v", ls, err)
		return false
	}
	return !sel.Empty() && sel.Matches(set)
}

// gatewayAPICRDs returns the Gateway and TLSRoute CRDs (standard channel)
// of the Gateway API module go.mod pins, downloading the module through
// the Go module proxy when the module cache lacks it.
func gatewayAPICRDs(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/gateway-api")
	cmd.Dir = root
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if err != nil || json.Unmarshal(out, &mod) != nil || mod.Dir == "" {
		t.Fatalf("failed to download the Gateway API module that go.mod pins (%v %s): run go mod download sigs.k8s.io/gateway-api", err, mod.Error)
	}
	std := filepath.Join(mod.Dir, "config", "crd", "standard")
	return []string{filepath.Join(std, "gateway.networking.k8s.io_gateways.yaml"), filepath.Join(std, "gateway.networking.k8s.io_tlsroutes.yaml")}
}

// TestExposureComponents builds the management overlay with
// components/expose-loadbalancer and components/expose-gateway, as
// docs/exposure.md tells users to, and applies it with server-side dry-run
// to a local cluster with the Gateway API CRDs: the LoadBalancer exposes
// port 9900 alone, and the Gateway passes TLS through, routing the
// authority's SNI to relay-server's gRPC port.
func TestExposureComponents(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{
		Names:   []string{"exposure"},
		CRDDirs: append([]string{filepath.Join(root, "manifests", "crds")}, gatewayAPICRDs(t, root)...),
	})
	ctx := t.Context()
	env.MustKubectl(ctx, t, "", "create", "namespace", config.DefaultNamespace)
	env.MustKubectl(ctx, t, "", "create", "namespace", config.DefaultWebhookNamespace)
	dir := kustomization(t, root, []string{"overlays/management"}, []string{"components/expose-loadbalancer", "components/expose-gateway"}, "")
	out := env.MustKubectl(ctx, t, "", "kustomize", dir)
	env.MustKubectl(ctx, t, out, "apply", "--dry-run=server", "-f", "-")
	objs, err := localmesh.Objects(out)
	if err != nil {
		t.Fatal(err)
	}
	checkProductionReady(t, "management with both exposure components", objs)
	server := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "gloo-mesh-mgmt-server"))
	pods := labels.Set(server.Spec.Template.Labels)
	internal := typed[corev1.Service](t, find(t, objs, "Service", "gloo-mesh-mgmt-server"))

	t.Run("the LoadBalancer exposes the gRPC port alone", func(t *testing.T) {
		lb := typed[corev1.Service](t, find(t, objs, "Service", "gloo-mesh-mgmt-server-external"))
		if lb.Spec.Type != corev1.ServiceTypeLoadBalancer {
			t.Errorf("type %s, want LoadBalancer", lb.Spec.Type)
		}
		if len(lb.Spec.Ports) != 1 || lb.Spec.Ports[0].Port != grpcPort || lb.Spec.Ports[0].TargetPort.String() != "grpc" {
			t.Errorf("ports %+v, want 9900 to grpc alone", lb.Spec.Ports)
		}
		if !labels.SelectorFromSet(lb.Spec.Selector).Matches(pods) || len(lb.Spec.Selector) == 0 {
			t.Errorf("selector %v does not select relay-server's pods", lb.Spec.Selector)
		}
	})
	t.Run("the Gateway passes TLS through and routes the authority to relay-server", func(t *testing.T) {
		gw := find(t, objs, "Gateway", "relay-server")
		listeners, _, _ := unstructured.NestedSlice(gw.Object, "spec", "listeners")
		if len(listeners) != 1 {
			t.Fatalf("listeners %v, want one", listeners)
		}
		l := listeners[0].(map[string]any)
		mode, _, _ := unstructured.NestedString(l, "tls", "mode")
		if l["protocol"] != "TLS" || mode != "Passthrough" || l["hostname"] != config.DefaultAuthority {
			t.Errorf("listener %v, want protocol TLS, tls.mode Passthrough (mutual TLS ends at relay-server), hostname %s", l, config.DefaultAuthority)
		}
		route := find(t, objs, "TLSRoute", "relay-server")
		if v := route.GetAPIVersion(); v != "gateway.networking.k8s.io/v1" {
			t.Errorf("TLSRoute %s, want gateway.networking.k8s.io/v1", v)
		}
		hosts, _, _ := unstructured.NestedStringSlice(route.Object, "spec", "hostnames")
		if !slices.Equal(hosts, []string{config.DefaultAuthority}) {
			t.Errorf("route hostnames %v, want the authority %s alone", hosts, config.DefaultAuthority)
		}
		parents, _, _ := unstructured.NestedSlice(route.Object, "spec", "parentRefs")
		if len(parents) != 1 || parents[0].(map[string]any)["name"] != gw.GetName() || parents[0].(map[string]any)["sectionName"] != l["name"] {
			t.Errorf("parentRefs %v, want the Gateway's listener %v", parents, l["name"])
		}
		rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
		var backends []string
		for _, r := range rules {
			refs, _, _ := unstructured.NestedSlice(r.(map[string]any), "backendRefs")
			for _, ref := range refs {
				ref := ref.(map[string]any)
				backends = append(backends, fmt.Sprintf("%v:%v", ref["name"], ref["port"]))
			}
		}
		if want := fmt.Sprintf("%s:%d", internal.Name, grpcPort); !slices.Equal(backends, []string{want}) {
			t.Errorf("backends %v, want %s alone", backends, want)
		}
		if !slices.ContainsFunc(internal.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == grpcPort }) {
			t.Errorf("Service %s has no port %d", internal.Name, grpcPort)
		}
	})
}
