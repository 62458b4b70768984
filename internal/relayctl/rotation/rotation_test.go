package rotation

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

func TestParseCertificateNamesEachRotationAndRefusesOthers(t *testing.T) {
	for _, c := range Certificates {
		if got, err := ParseCertificate(string(c)); err != nil || got != c {
			t.Errorf("ParseCertificate(%q) = %q, %v", c, got, err)
		}
	}
	if _, err := ParseCertificate("client"); err == nil || !strings.Contains(err.Error(), "root, intermediate or server") {
		t.Errorf("ParseCertificate(client): %v, want the three names", err)
	}
	for c, want := range map[Certificate]string{Root: "rotateRoot", Intermediate: "rotateIntermediate", Server: "rotateServer"} {
		if got := c.SpecField(); got != want {
			t.Errorf("%s.SpecField() = %q, want %q", c, got, want)
		}
		var spec v1alpha1.RelayTrustSpec
		*c.requestField(&spec) = &v1alpha1.RotationRequest{Reason: string(c)}
		data, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), `"`+want+`":{`) || c.Request(&spec).Reason != string(c) {
			t.Errorf("%s's request lands in %s, want %s", c, data, want)
		}
	}
}

func TestMergePatchSetsOneRequestAndClearsWhatAnEarlierOneLeft(t *testing.T) {
	at := metav1.NewTime(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	for _, tc := range []struct {
		name string
		c    Certificate
		req  v1alpha1.RotationRequest
		want string
	}{
		{"a plain request removes an earlier now and reason", Root, v1alpha1.RotationRequest{RequestedAt: at},
			`{"spec":{"rotateRoot":{"now":null,"reason":null,"requestedAt":"2030-01-02T03:04:05Z"}}}`},
		{"now and reason are sent", Server, v1alpha1.RotationRequest{RequestedAt: at, Now: true, Reason: "drill"},
			`{"spec":{"rotateServer":{"now":true,"reason":"drill","requestedAt":"2030-01-02T03:04:05Z"}}}`},
		{"the intermediate's field", Intermediate, v1alpha1.RotationRequest{RequestedAt: at},
			`{"spec":{"rotateIntermediate":{"now":null,"reason":null,"requestedAt":"2030-01-02T03:04:05Z"}}}`},
	} {
		got, err := mergePatch(tc.c, tc.req)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: %s, %v\nwant %s", tc.name, got, err, tc.want)
		}
	}
}

func TestPlanOfARootRotationWaitsForTheAgentsEvenWithNow(t *testing.T) {
	for _, now := range []bool{false, true} {
		steps := Plan(Root, now)
		var phases []string
		for _, s := range steps {
			phases = append(phases, string(s.Phase))
		}
		if strings.Join(phases, ",") != "Prepare,Activate,Retire,Stable" {
			t.Fatalf("now=%v: phases %v", now, phases)
		}
		text := PlanText(steps)
		for _, want := range []string{
			"every connected agent to acknowledge the bundle with both roots",
			"no live client certificate of any cluster to chain to the old root",
			"every connected agent to acknowledge the bundle without it",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("now=%v: the plan does not wait for %q:\n%s", now, want, text)
			}
		}
		if got := strings.Count(text, "rootRotationOverlap (relay-server's setting, 24h by default)"); (got == 2) == now {
			t.Errorf("now=%v: the plan names the overlap %d times:\n%s", now, got, text)
		}
	}
	for c, want := range map[Certificate]string{
		Intermediate: "waits for no root rotation in Prepare or Activate (a root rotation brings its own intermediate), and no live client certificate to come from the intermediate before the current one",
		Server:       "waits for no root rotation in Prepare, whose new root not every agent trusts yet",
	} {
		steps := Plan(c, true)
		if len(steps) != 1 || steps[0].Phase != "" {
			t.Errorf("%s: plan %+v, want one step", c, steps)
		}
		if text := PlanText(steps); !strings.Contains(text, want) {
			t.Errorf("%s: %q, want %q", c, text, want)
		}
	}
	if got := PlanText(Plan(Intermediate, false)); !strings.Contains(got, "previous.crt") {
		t.Errorf("an intermediate rotation does not say the old one is still admitted: %s", got)
	}
}

func TestShortDurationWritesLifetimesAsPeopleDo(t *testing.T) {
	for d, want := range map[time.Duration]string{24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 10 * time.Second: "10s", 2 * time.Minute: "2m"} {
		if got := ShortDuration(d); got != want {
			t.Errorf("ShortDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// trust is a RelayTrust in phase Stable whose certificates are valid at
// now, with a Ready condition of status ready.
func trust(now time.Time, ready metav1.ConditionStatus) *v1alpha1.RelayTrust {
	cert := func(secret, sha string, left time.Duration) *v1alpha1.TrustCertificate {
		renew := metav1.NewTime(now.Add(left / 2))
		return &v1alpha1.TrustCertificate{Secret: secret, SHA256: sha, NotBefore: metav1.NewTime(now.Add(-time.Hour)), NotAfter: metav1.NewTime(now.Add(left)), RenewAt: &renew, Generated: true}
	}
	since := metav1.NewTime(now.Add(-3 * time.Hour))
	return &v1alpha1.RelayTrust{
		ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: v1alpha1.RelayTrustName, Generation: 1},
		Status: v1alpha1.RelayTrustStatus{
			ObservedGeneration: 1,
			Phase:              v1alpha1.PhaseStable,
			PhaseSince:         &since,
			Root:               cert("relay-root-tls-secret", strings.Repeat("a1", 32), 3650*24*time.Hour),
			Intermediate:       cert("relay-tls-signing-secret", strings.Repeat("b2", 32), 1800*24*time.Hour),
			Server:             cert("relay-server-tls-secret", strings.Repeat("c3", 32), 700*24*time.Hour),
			Bundle:             &v1alpha1.BundleStatus{SHA256: strings.Repeat("d4", 32), Roots: 1, Acknowledged: 2, Connected: 2},
			Rotations:          v1alpha1.RotationCounts{Server: 3},
			Conditions: []metav1.Condition{{Type: ConditionReady, Status: ready, Reason: "Valid", Message: "every certificate is valid",
				LastTransitionTime: since}},
		},
	}
}

func TestProblemsAreWhatReadySaysAndEveryExpiredCertificate(t *testing.T) {
	now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	expired := trust(now, metav1.ConditionTrue)
	expired.Status.Server.NotAfter = metav1.NewTime(now.Add(-time.Minute))
	notReady := trust(now, metav1.ConditionFalse)
	notReady.Status.Conditions[0].Reason, notReady.Status.Conditions[0].Message = "RenewalOverdue", "server certificate: renewal overdue since 2030-05-01T00:00:00Z"
	silent := trust(now, metav1.ConditionTrue)
	silent.Status = v1alpha1.RelayTrustStatus{}
	for _, tc := range []struct {
		name string
		rt   *v1alpha1.RelayTrust
		want []string
	}{
		{"a ready RelayTrust has none", trust(now, metav1.ConditionTrue), nil},
		{"Ready False is a problem with its reason and message", notReady, []string{"Ready is False (RenewalOverdue): server certificate: renewal overdue since 2030-05-01T00:00:00Z"}},
		{"an expired certificate is a problem though Ready is True, as a stopped relay-server left it", expired,
			[]string{"the server certificate in secret relay-server-tls-secret (sha256 c3c3c3c3c3c3) expired at 2030-05-31T23:59:00Z"}},
		{"no status at all is a problem", silent, []string{"relay-server has not said whether its certificates are valid (no Ready condition)"}},
	} {
		got := Problems(tc.rt, now)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if !strings.HasPrefix(got[i], tc.want[i]) {
				t.Errorf("%s: %q, want %q", tc.name, got[i], tc.want[i])
			}
		}
	}
}

func TestStatusTextShowsThePhaseCertificatesBundleAndTheClustersWaitedFor(t *testing.T) {
	now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	rt := trust(now, metav1.ConditionTrue)
	rt.Status.Phase = v1alpha1.PhasePrepare
	rt.Status.Incoming = &v1alpha1.TrustCertificate{Secret: "relay-root-tls-secret", SHA256: strings.Repeat("e5", 32), NotAfter: metav1.NewTime(now.Add(3650 * 24 * time.Hour)), RenewAt: &metav1.Time{Time: now.Add(2000 * 24 * time.Hour)}}
	rt.Status.Server.RenewAt, rt.Status.Server.Generated = nil, false
	rt.Status.Bundle.Roots, rt.Status.Bundle.Acknowledged = 2, 1
	rt.Status.Pending = []v1alpha1.PendingCluster{{Cluster: "cluster-2", Reason: v1alpha1.PendingBundleNotAcknowledged}}
	rt.Status.PendingCount = 3
	text := StatusText(rt, now)
	for _, want := range []string{
		"RelayTrust gloo-mesh/relay-server: phase Prepare since 2030-05-31T21:00:00Z (3h0m0s ago)\n",
		"CERTIFICATE    SECRET",
		"\nroot           relay-root-tls-secret      a1a1a1a1a1a1   2040-05-29T00:00:00Z   3650d   2035-05-31T00:00:00Z\n",
		"\nincoming       relay-root-tls-secret      e5e5e5e5e5e5",
		"\nserver         relay-server-tls-secret    c3c3c3c3c3c3   2032-05-01T00:00:00Z   700d    never (not generated by relay-server)\n",
		"Trust bundle: sha256 d4d4d4d4d4d4, 2 root(s), acknowledged by 1 of 2 connected cluster(s)\n",
		"Waiting for 3 cluster(s):\n",
		"  cluster-2   BundleNotAcknowledged: its agent has not acknowledged the current trust bundle\n",
		"  and 2 more\n",
		"Rotations done: root 0, intermediate 0, server 3\n",
		"  Ready=True (Valid) since 2030-05-31T21:00:00Z: every certificate is valid\n",
		"ready: every certificate is valid and renewed on time\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status text does not hold %q:\n%s", want, text)
		}
	}

	rt.Generation = 2
	rt.Spec.RotateRoot = &v1alpha1.RotationRequest{RequestedAt: metav1.NewTime(now)}
	rt.Status.Server.NotAfter = metav1.NewTime(now)
	text = StatusText(rt, now)
	for _, want := range []string{
		"Requested: root at 2030-06-01T00:00:00Z (not acted on by relay-server yet)\n",
		"expired",
		"PROBLEM the server certificate in secret relay-server-tls-secret",
		"1 problem(s) found\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status text does not hold %q:\n%s", want, text)
		}
	}
}

func TestDoneIsOneMoreRotationBackInPhaseStable(t *testing.T) {
	now := time.Now()
	rt := trust(now, metav1.ConditionTrue)
	for _, tc := range []struct {
		name  string
		phase v1alpha1.RotationPhase
		count int64
		want  bool
	}{
		{"no rotation counted yet", v1alpha1.PhaseStable, 3, false},
		{"counted and Stable", v1alpha1.PhaseStable, 4, true},
		{"counted, but a root rotation is under way", v1alpha1.PhaseRetire, 4, false},
		{"no phase written", "", 4, false},
	} {
		rt.Status.Phase, rt.Status.Rotations.Server = tc.phase, tc.count
		if got := Done(rt, Server, 3); got != tc.want {
			t.Errorf("%s: Done = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestANewRequestIsAfterEveryEarlierOneEvenWithinTheSameSecond(t *testing.T) {
	at := time.Date(2030, 6, 1, 12, 0, 0, 700_000_000, time.UTC)
	sec := func(d time.Duration) *metav1.Time { m := metav1.NewTime(at.Truncate(time.Second).Add(d)); return &m }
	for _, tc := range []struct {
		name     string
		spec     *metav1.Time
		observed *metav1.Time
		want     time.Time
	}{
		{"no earlier request: now, in whole seconds", nil, nil, at.Truncate(time.Second)},
		{"an older request: now", sec(-time.Minute), sec(-time.Minute), at.Truncate(time.Second)},
		{"a request in this second, acted on: the next second", sec(0), sec(0), at.Truncate(time.Second).Add(time.Second)},
		{"a request in this second, not acted on: the next second", sec(0), nil, at.Truncate(time.Second).Add(time.Second)},
		{"an earlier request already a second ahead: the second after it", sec(time.Second), sec(0), at.Truncate(time.Second).Add(2 * time.Second)},
	} {
		rt := &v1alpha1.RelayTrust{}
		if tc.spec != nil {
			rt.Spec.RotateServer = &v1alpha1.RotationRequest{RequestedAt: *tc.spec}
		}
		rt.Status.ObservedRequests.Server = tc.observed
		if got := nextRequestTime(rt, Server, at); !got.Equal(tc.want) {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
		if got := nextRequestTime(rt, Root, at); !got.Equal(at.Truncate(time.Second)) {
			t.Errorf("%s: the root's request time %s follows the server's requests", tc.name, got)
		}
	}
}

func TestARequestIsSeenOnceObservedAndDeclinedWhenSeenWithoutARotation(t *testing.T) {
	at := metav1.NewTime(time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC))
	rt := trust(at.Time, metav1.ConditionTrue)
	if !Root.Seen(rt) {
		t.Error("no request is not seen")
	}
	rt.Spec.RotateRoot = &v1alpha1.RotationRequest{RequestedAt: at}
	if Root.Seen(rt) || Declined(rt, Root, 0, at) {
		t.Error("a request not in observedRequests is seen or declined")
	}
	rt.Status.ObservedRequests.Root = at.DeepCopy()
	if !Root.Seen(rt) || !Declined(rt, Root, 0, at) {
		t.Error("a request observed in phase Stable with no rotation counted is not seen and declined")
	}
	rt.Status.Phase = v1alpha1.PhasePrepare
	if Declined(rt, Root, 0, at) {
		t.Error("a request observed while a root rotation is under way is declined")
	}
	rt.Status.Phase, rt.Status.Rotations.Root = v1alpha1.PhaseStable, 1
	if Declined(rt, Root, 0, at) || !Done(rt, Root, 0) {
		t.Error("a request observed with a rotation counted is declined, or not done")
	}
}
