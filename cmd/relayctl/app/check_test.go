package app

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

func TestCheckStreamsFromFollowsItsFlags(t *testing.T) {
	for _, tc := range []struct {
		name, from string
		urls       []string
		want, err  string
	}{
		{"neither flag: status", "", nil, fleet.StreamsFromStatus, ""},
		{"--server-metrics alone: metrics from those URLs", "", []string{"http://a/metrics"}, fleet.StreamsFromMetrics, ""},
		{"--streams-from=metrics alone: metrics of every pod", "metrics", nil, fleet.StreamsFromMetrics, ""},
		{"--streams-from=metrics with URLs", "metrics", []string{"http://a/metrics"}, fleet.StreamsFromMetrics, ""},
		{"--streams-from=status", "status", nil, fleet.StreamsFromStatus, ""},
		{"--streams-from=status with URLs is refused", "status", []string{"http://a/metrics"}, "", "--server-metrics reads streams from metrics"},
		{"an unknown source is refused", "logs", nil, "", `unknown --streams-from "logs": use status`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := streamsSource(tc.from, tc.urls)
			if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("streamsSource(%q, %v) = %q, %v; want %q, %q", tc.from, tc.urls, got, err, tc.want, tc.err)
			}
		})
	}
}

// TestCheckRefusesBadStreamFlagsBeforeReadingAnyCluster gives check a
// kubeconfig that does not exist: a refusal that names the flag came
// before anything was read.
func TestCheckRefusesBadStreamFlagsBeforeReadingAnyCluster(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--streams-from", "logs"}, `unknown --streams-from "logs"`},
		{[]string{"--streams-from", "status", "--server-metrics", "http://127.0.0.1:1/metrics"}, "--server-metrics reads streams from metrics"},
		// Accepted: it fails only on the kubeconfig.
		{[]string{"--streams-from", "metrics"}, `context "mgmt"`},
		{[]string{"--server-metrics", "http://127.0.0.1:1/metrics", "--server-metrics", "http://127.0.0.1:2/metrics"}, `context "mgmt"`},
	} {
		code, _, stderr := runCLI(t, "check", append(tc.args, "--kubeconfig", none, "--mgmt-context", "mgmt")...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("check %v: exit %d, stderr %q; want %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestCheckHelpSaysWhereStreamsComeFrom(t *testing.T) {
	code, out, stderr := runCLI(t, "check", "--help")
	if code != 0 {
		t.Fatalf("check --help: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"--streams-from string",
		"status (the default): each KubernetesCluster's status",
		"only while its replica renews its Lease",
		"Otherwise check reports why: the condition's message,\n    or that the status is missing or its replicas have stopped.",
		"metrics: relay-server's /metrics of every replica, summed per cluster",
		"the pods\n    behind the Service gloo-mesh-mgmt-server (its selector)",
		"API\n    server's pod proxy on the container port named metrics (else 9091)",
		"(it implies --streams-from=metrics)",
		"--server-metrics stringArray",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check --help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "service\nproxy") || strings.Contains(out, "service proxy") {
		t.Errorf("check --help still says streams are read through the service proxy:\n%s", out)
	}
}

// TestCheckCommandReadsStatusByDefault runs check against a local cluster
// whose KubernetesCluster status two relay-server replicas wrote, with no
// flag about streams, then with --streams-from=metrics and no
// relay-server to read.
func TestCheckCommandReadsStatusByDefault(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ctx := t.Context()
	const ns = "gloo-mesh"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &v1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cluster-1"}}); err != nil {
		t.Fatal(err)
	}
	for _, replica := range []string{"relay-server-a", "relay-server-b"} {
		// Each replica renews its Lease and applies its own status entry,
		// as relay-server does.
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "relay-server-replica-" + replica, Labels: map[string]string{"meshrelay.dev/relay-server-replica": "true"}},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(replica), LeaseDurationSeconds: ptr.To(int32(20)), RenewTime: &metav1.MicroTime{Time: time.Now()}},
		}
		if err := c.Create(ctx, lease); err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.GroupVersion.String(), "kind": "KubernetesCluster",
			"metadata": map[string]any{"namespace": ns, "name": "cluster-1"},
			"status":   map[string]any{"replicas": []any{map[string]any{"replica": replica, "pushStreams": int64(1), "pullStreams": int64(1)}}},
		}}
		if err := c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("relay-server-replica/"+replica), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
	}
	kube := []string{"--kubeconfig", env.Kubeconfig, "--mgmt-context", "mgmt", "--remote-context", "mgmt=cluster-1"}

	_, out, stderr := runCLI(t, "check", kube...)
	for _, want := range []string{
		`(?m)^CLUSTER +REGISTERED +PUSH +PULL +REPLICAS +CLIENT CERT EXPIRES$`,
		`(?m)^cluster-1 +true +2 +2 +relay-server-a,relay-server-b +unknown$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("check's table does not match %s:\n%s%s", want, out, stderr)
		}
	}
	if !strings.Contains(stderr, "--mgmt-context has been deprecated, use --context instead") {
		t.Errorf("the old --mgmt-context works without a note that --context replaces it: %q", stderr)
	}
	if strings.Contains(out, "relay streams") || strings.Contains(out, "relay-server replicas") {
		t.Errorf("check reports a problem with streams or replicas:\n%s", out)
	}

	_, out, _ = runCLI(t, "check", append(kube, "-o", "json")...)
	var report struct {
		APIVersion, Kind string
		fleet.Report
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("check -o json: %v:\n%s", err, out)
	}
	if report.APIVersion != reportAPIVersion || report.Kind != kindCheck {
		t.Errorf("check -o json is apiVersion %q kind %q, want %s %s", report.APIVersion, report.Kind, reportAPIVersion, kindCheck)
	}
	if len(report.Clusters) != 1 || report.Clusters[0].StreamsFrom != "status" || len(report.Clusters[0].Replicas) != 2 {
		t.Errorf("check -o json clusters = %+v, want cluster-1 with streams from status on two replicas", report.Clusters)
	}
	for _, key := range []string{`"streamsFrom": "status"`, `"replicas": [`, `"replica": "relay-server-a"`, `"pushing": 2`} {
		if !strings.Contains(out, key) {
			t.Errorf("check -o json lacks %s:\n%s", key, out)
		}
	}

	code, out, _ := runCLI(t, "check", append(kube, "--streams-from", "metrics")...)
	want := "PROBLEM management: relay-server metrics: no Service gloo-mesh/gloo-mesh-mgmt-server to find relay-server's pods by: is relay-server running? (kubectl -n gloo-mesh get deploy gloo-mesh-mgmt-server)"
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("check --streams-from=metrics without relay-server: exit %d, want 1 and %q:\n%s", code, want, out)
	}
}
