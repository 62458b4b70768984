package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
)

// What the alert tests share: promtool, the monitoring component built
// over an overlay, and promtool rule unit tests made from scraped metrics.

// promtoolEnv names the promtool binary the alert tests run; make test
// builds the pinned one and sets it.
const promtoolEnv = "PROMTOOL"

// promtool returns the path $PROMTOOL names, failing the test when it is
// not an executable file.
func promtool(t *testing.T) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	fix := fmt.Sprintf("run make test, or make %s and set %s to it", filepath.Join(root, "bin", "tools", "promtool"), promtoolEnv)
	path := os.Getenv(promtoolEnv)
	if path == "" {
		t.Fatalf("$%s is not set: the alert rules are checked with promtool: %s", promtoolEnv, fix)
	}
	if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("$%s=%s is not an executable (%v): %s", promtoolEnv, path, err, fix)
	}
	return path
}

// runPromtool runs promtool with args in dir and fails the test with its
// output when it exits non-zero.
func runPromtool(ctx context.Context, t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// kubectlBinary returns the kubectl of the local-cluster binaries.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	dir, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CheckAssets(dir, "kubectl"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "kubectl")
}

// buildWithMonitoring builds overlay (relative to manifests/overlays) with
// components/monitoring added, as a user's overlay would list it, and
// returns the objects.
func buildWithMonitoring(ctx context.Context, t *testing.T, kubectl, root, overlay string) []*unstructured.Unstructured {
	t.Helper()
	dir := t.TempDir()
	base, err := filepath.Rel(dir, filepath.Join(root, "manifests", "overlays", overlay))
	if err != nil {
		t.Fatal(err)
	}
	component, err := filepath.Rel(dir, filepath.Join(root, "manifests", "components", "monitoring"))
	if err != nil {
		t.Fatal(err)
	}
	kustomization := fmt.Sprintf("resources:\n  - %s\ncomponents:\n  - %s\n", base, component)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize of overlay %s with components/monitoring: %v\n%s", overlay, err, stderr.String())
	}
	objs, err := localmesh.Objects(string(out))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// writeRules writes the rule groups of PrometheusRule meshrelay in objs to
// dir/rules.yaml, the plain rules file promtool reads, and returns the
// groups.
func writeRules(t *testing.T, objs []*unstructured.Unstructured, dir string) []any {
	t.Helper()
	var groups []any
	for _, u := range objs {
		if u.GetKind() == "PrometheusRule" && u.GetName() == "meshrelay" {
			groups, _, _ = unstructured.NestedSlice(u.Object, "spec", "groups")
		}
	}
	if len(groups) == 0 {
		t.Fatal("the build has no PrometheusRule meshrelay with rule groups: components/monitoring must add it")
	}
	data, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return groups
}

// scrapeTarget is one pod's metrics endpoint as Prometheus Operator labels
// its samples through the component's ServiceMonitors: job is the binary
// (jobLabel app.kubernetes.io/name), endpoint the port name.
type scrapeTarget struct {
	job, service, pod, addr string
}

func (s scrapeTarget) labels() map[string]string {
	return map[string]string{
		"job": s.job, "namespace": "gloo-mesh", "service": s.service, "endpoint": "metrics",
		"pod": s.pod, "container": s.job, "instance": s.addr,
	}
}

// aggregated are the labels an agent alert keeps: the target's, less
// instance and pod.
func (s scrapeTarget) aggregated() map[string]string {
	l := s.labels()
	delete(l, "instance")
	delete(l, "pod")
	return l
}

// scrape is every relay_ gauge and counter of some targets, read at one
// time, by series (name and labels as promtool writes them).
type scrape struct {
	at       time.Time
	values   map[string]float64
	counters map[string]bool
}

// scrapeAll reads the relay_ gauges and counters of every target.
func scrapeAll(targets ...scrapeTarget) (*scrape, error) {
	s := &scrape{at: time.Now(), values: map[string]float64{}, counters: map[string]bool{}}
	for _, tg := range targets {
		families, err := readMetrics("http://" + tg.addr + "/metrics")
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", tg.job, tg.pod, err)
		}
		for name, f := range families {
			if !strings.HasPrefix(name, "relay_") || (f.GetType() != dto.MetricType_GAUGE && f.GetType() != dto.MetricType_COUNTER) {
				continue
			}
			for _, m := range f.GetMetric() {
				l := tg.labels()
				for _, p := range m.GetLabel() {
					l[p.GetName()] = p.GetValue()
				}
				key := seriesOf(name, l)
				if f.GetType() == dto.MetricType_COUNTER {
					s.values[key], s.counters[key] = m.GetCounter().GetValue(), true
				} else {
					s.values[key] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return s, nil
}

// value returns the sample of name whose labels include want, and whether
// there is one.
func (s *scrape) value(name string, want map[string]string) (float64, bool) {
	for key, v := range s.values {
		if seriesName(key) != name {
			continue
		}
		if matchesLabels(key, want) {
			return v, true
		}
	}
	return 0, false
}

func readMetrics(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(bytes.NewReader(body))
}

// seriesOf writes a series as promtool's input_series reads it.
func seriesOf(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	pairs := make([]string, len(keys))
	for i, k := range keys {
		pairs[i] = k + "=" + strconv.Quote(labels[k])
	}
	return name + "{" + strings.Join(pairs, ",") + "}"
}

func seriesName(series string) string {
	name, _, _ := strings.Cut(series, "{")
	return name
}

// matchesLabels reports whether series has every label of want.
func matchesLabels(series string, want map[string]string) bool {
	for k, v := range want {
		if !strings.Contains(series, k+"="+strconv.Quote(v)) {
			return false
		}
	}
	return true
}

// The synthetic timeline of a promtool test group: an evaluation every
// minute, over steps minutes.
const (
	evalInterval = time.Minute
	steps        = 100
)

// promSeries is one of promtool's input_series.
type promSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}

// inputSeries turns two scrapes of the same targets into promtool input
// series from the time of the last: a gauge holds its last value (a
// timestamp stays the time it names, since the group starts at the time of
// the last scrape), and a counter goes on at the rate it had between the
// two scrapes (a counter absent from the first started at 0; one that fell
// was reset, and holds).
func inputSeries(first, last *scrape) []promSeries {
	gap := last.at.Sub(first.at).Seconds()
	keys := make([]string, 0, len(last.values))
	for k := range last.values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]promSeries, 0, len(keys))
	for _, k := range keys {
		v := last.values[k]
		step := 0.0
		if last.counters[k] && gap > 0 {
			if before := first.values[k]; v > before {
				step = (v - before) / gap * evalInterval.Seconds()
			}
		}
		out = append(out, promSeries{Series: k, Values: fmt.Sprintf("%s+%sx%d", number(v), number(step), steps)})
	}
	return out
}

func number(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// promGroup is one of promtool's test groups: what one Prometheus scraped,
// and the alerts it must have at given times.
type promGroup struct {
	Name           string            `json:"name"`
	Interval       string            `json:"interval"`
	StartTimestamp string            `json:"start_timestamp"`
	ExternalLabels map[string]string `json:"external_labels,omitempty"`
	InputSeries    []promSeries      `json:"input_series"`
	AlertRuleTests []alertRuleTest   `json:"alert_rule_test"`
}

type alertRuleTest struct {
	EvalTime  string     `json:"eval_time"`
	Alertname string     `json:"alertname"`
	ExpAlerts []expAlert `json:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `json:"exp_labels"`
	ExpAnnotations map[string]string `json:"exp_annotations"`
}

// firing is an alert expected to fire: its name, labels (alertname aside)
// and annotations.
type firing struct {
	alert       string
	labels      map[string]string
	annotations map[string]string
}

// alertNames are the component's alerts; every expectation lists each.
var alertNames = []string{"RelayCertificateExpiring", "RelayRotationOverdue", "RelayClusterDisconnected", "RelayRefusalSpike"}

// newGroup makes the test group of what one Prometheus (named name, with
// externalLabels) scraped twice.
func newGroup(name string, externalLabels map[string]string, first, last *scrape) *promGroup {
	return &promGroup{
		Name:           name,
		Interval:       model.Duration(evalInterval).String(),
		StartTimestamp: strconv.FormatInt(last.at.Unix(), 10),
		ExternalLabels: externalLabels,
		InputSeries:    inputSeries(first, last),
	}
}

// expect says that at eval time after the last scrape exactly fires are
// firing: every alert not among them has none.
func (g *promGroup) expect(at time.Duration, fires ...firing) {
	for _, name := range alertNames {
		tc := alertRuleTest{EvalTime: model.Duration(at).String(), Alertname: name, ExpAlerts: []expAlert{}}
		for _, f := range fires {
			if f.alert == name {
				tc.ExpAlerts = append(tc.ExpAlerts, expAlert{ExpLabels: f.labels, ExpAnnotations: f.annotations})
			}
		}
		g.AlertRuleTests = append(g.AlertRuleTests, tc)
	}
	for _, f := range fires {
		if !slices.Contains(alertNames, f.alert) {
			panic("unknown alert " + f.alert)
		}
	}
}

// testRules writes groups as a promtool test file beside dir/rules.yaml and
// runs promtool test rules on it, failing the test with promtool's output.
func testRules(ctx context.Context, t *testing.T, bin, dir string, groups []*promGroup) {
	t.Helper()
	file := map[string]any{
		"rule_files":          []string{"rules.yaml"},
		"evaluation_interval": model.Duration(evalInterval).String(),
		"tests":               groups,
	}
	data, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(ctx, t, bin, dir, "test", "rules", "alerts_test.yaml")
}
