package app

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/relayctl/rotation"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// TestRotateChecksItsArgumentsBeforeReadingAnyCluster gives rotate a
// kubeconfig that does not exist: each refusal must name the flag, so it
// came before anything was read.
func TestRotateChecksItsArgumentsBeforeReadingAnyCluster(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"root", "-o", "table"}, `unknown output format "table"`},
		{[]string{"status", "-o", "wide"}, `unknown output format "wide"`},
		{[]string{"server", "--reason", strings.Repeat("x", 257)}, "--reason is 257 bytes long: give at most 256"},
		{[]string{"root", "--wait", "--dry-run=server"}, "--wait waits for a rotation, which --dry-run does not ask for"},
		{[]string{"intermediate", "--timeout", "1m"}, "--timeout bounds --wait: add --wait"},
		{[]string{"client"}, `unknown command "client" for "relayctl rotate"`},
		{[]string{"root", "extra"}, `unknown command "extra" for "relayctl rotate root"`},
		{[]string{"root"}, "failed to load the kubeconfig for the current context"},
	} {
		code, _, stderr := runCLI(t, "rotate", append(tc.args, "--kubeconfig", none)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("rotate %v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestRotateAgainstALocalCluster asks for rotations of a management
// cluster's RelayTrust and reads its status, with the test writing the
// status as relay-server's leader would.
func TestRotateAgainstALocalCluster(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const ns = "relay"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	kube := []string{"--kubeconfig", env.Kubeconfig, "--context", "mgmt", "-n", ns}
	key := types.NamespacedName{Namespace: ns, Name: v1alpha1.RelayTrustName}
	get := func() *v1alpha1.RelayTrust {
		t.Helper()
		var rt v1alpha1.RelayTrust
		if err := c.Get(ctx, key, &rt); err != nil {
			t.Fatalf("RelayTrust %s: %v", key, err)
		}
		return &rt
	}
	rotate := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, "rotate", append(args, kube...)...)
	}

	t.Run("status before relay-server made the RelayTrust found a problem", func(t *testing.T) {
		code, _, stderr := rotate("status")
		if code != 1 || !strings.Contains(stderr, "RelayTrust relay/relay-server not found on the management cluster: relay-server makes it when it starts") {
			t.Errorf("rotate status: exit %d, stderr %q; want 1 and the RelayTrust not found", code, stderr)
		}
	})

	t.Run("dry runs write nothing", func(t *testing.T) {
		code, out, stderr := rotate("root", "--dry-run=client")
		if code != 0 || !strings.Contains(out, "mgmt: RelayTrust relay/relay-server would be created: root rotation requested at ") || !strings.Contains(out, "dry run: nothing was written") {
			t.Errorf("rotate root --dry-run=client: exit %d, stderr %q, out:\n%s", code, stderr, out)
		}
		code, out, stderr = rotate("root", "--dry-run=server", "-o", "json")
		var rep struct {
			Kind   string `json:"kind"`
			Action string `json:"action"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Kind != kindRotate || rep.Action != "created (server dry run)" {
			t.Errorf("rotate root --dry-run=server -o json: exit %d, stderr %q, out:\n%s", code, stderr, out)
		}
		if err := c.Get(ctx, key, &v1alpha1.RelayTrust{}); !apierrors.IsNotFound(err) {
			t.Errorf("after dry runs, RelayTrust %s: %v, want not found", key, err)
		}
	})

	t.Run("a request creates the RelayTrust, and the next one patches only its own field", func(t *testing.T) {
		code, out, stderr := rotate("root", "--now", "--reason", "yearly drill")
		if code != 0 {
			t.Fatalf("rotate root: exit %d: %s", code, stderr)
		}
		rt := get()
		root := rt.Spec.RotateRoot
		if root == nil || !root.Now || root.Reason != "yearly drill" || time.Since(root.RequestedAt.Time) > time.Minute {
			t.Fatalf("spec.rotateRoot = %+v, want now, the reason and a time about now", root)
		}
		for _, want := range []string{
			"mgmt: RelayTrust relay/relay-server created: root rotation requested at " + root.RequestedAt.UTC().Format(time.RFC3339) + `, now, reason "yearly drill"` + "\n",
			"  1. Prepare   a new root joins the trust bundle beside the current one",
			"waits for every connected agent to acknowledge the bundle with both roots\n",
			"  2. Activate  ",
			"waits for no live client certificate of any cluster to chain to the old root\n",
			"  3. Retire    the old root leaves the trust bundle\n",
			"  4. Stable    one root again",
			"follow it with relayctl rotate status --context mgmt -n relay, or kubectl get relaytrust -n relay --context mgmt\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("rotate root --now does not say %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "rootRotationOverlap") {
			t.Errorf("rotate root --now still waits for rootRotationOverlap:\n%s", out)
		}

		if code, out, stderr = rotate("server", "--now"); code != 0 || !strings.Contains(out, "RelayTrust relay/relay-server patched: server rotation requested") ||
			!strings.Contains(out, "--now changes nothing here: a server rotation has no minimum time to skip") {
			t.Fatalf("rotate server --now: exit %d, stderr %q, out:\n%s", code, stderr, out)
		}
		// Within the same second, too, a new request is a new requestedAt.
		if code, out, stderr = rotate("root"); code != 0 || !strings.Contains(out, "waits for every connected agent to acknowledge the bundle with both roots, and at least rootRotationOverlap") {
			t.Fatalf("rotate root: exit %d, stderr %q, out:\n%s", code, stderr, out)
		}
		again := get()
		if r := again.Spec.RotateRoot; r == nil || r.Now || r.Reason != "" || !r.RequestedAt.After(root.RequestedAt.Time) {
			t.Errorf("after a plain rotate root, spec.rotateRoot = %+v; want a later request without the earlier --now and --reason", r)
		}
		if s := again.Spec.RotateServer; s == nil || !s.Now {
			t.Errorf("rotate root changed spec.rotateServer to %+v", s)
		}
	})

	t.Run("status before relay-server wrote any found a problem", func(t *testing.T) {
		code, out, _ := rotate("status")
		for _, want := range []string{"phase unknown (relay-server has written no status)", "(not acted on by relay-server yet)", "PROBLEM relay-server has not said whether its certificates are valid"} {
			if !strings.Contains(out, want) {
				t.Errorf("rotate status does not say %q:\n%s", want, out)
			}
		}
		if code != 1 {
			t.Errorf("rotate status of a RelayTrust without status: exit %d, want 1", code)
		}
	})

	leader := &fakeLeader{c: c, key: key}
	leader.write(ctx, t, func(st *v1alpha1.RelayTrustStatus) {})

	t.Run("status of a ready RelayTrust", func(t *testing.T) {
		code, out, stderr := rotate("status")
		if code != 0 {
			t.Fatalf("rotate status: exit %d, stderr %q:\n%s", code, stderr, out)
		}
		for _, want := range []string{
			"RelayTrust relay/relay-server: phase Stable since ",
			"root           relay-root-tls-secret      a1a1a1a1a1a1   ",
			"Trust bundle: sha256 d4d4d4d4d4d4, 1 root(s), acknowledged by 2 of 2 connected cluster(s)",
			"Waiting for: no cluster",
			"Ready=True (Valid)",
			"ready: every certificate is valid and renewed on time",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("rotate status does not say %q:\n%s", want, out)
			}
		}
		code, out, stderr = rotate("status", "-o", "yaml")
		var rep struct {
			APIVersion string                    `json:"apiVersion"`
			Kind       string                    `json:"kind"`
			Namespace  string                    `json:"namespace"`
			Name       string                    `json:"name"`
			Ready      bool                      `json:"ready"`
			Status     v1alpha1.RelayTrustStatus `json:"status"`
		}
		if code != 0 {
			t.Fatalf("rotate status -o yaml: exit %d: %s", code, stderr)
		}
		if err := yaml.UnmarshalStrict([]byte(out), &rep); err != nil {
			t.Fatalf("rotate status -o yaml: %v\n%s", err, out)
		}
		if rep.APIVersion != reportAPIVersion || rep.Kind != kindRotationStatus || rep.Namespace != ns || !rep.Ready ||
			rep.Status.Root == nil || rep.Status.Root.SHA256 != strings.Repeat("a1", 32) || rep.Status.Rotations.Server != 3 {
			t.Errorf("rotate status -o yaml:\n%s", out)
		}
	})

	t.Run("status of a RelayTrust that is not Ready found a problem", func(t *testing.T) {
		leader.write(ctx, t, func(st *v1alpha1.RelayTrustStatus) {
			st.Conditions[0].Status, st.Conditions[0].Reason, st.Conditions[0].Message = metav1.ConditionFalse, "RenewalOverdue", "server certificate: renewal overdue"
		})
		code, out, _ := rotate("status", "-o", "json")
		var rep struct {
			Ready    bool     `json:"ready"`
			Problems []string `json:"problems"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("rotate status -o json: %v\n%s", err, out)
		}
		if code != 1 || rep.Ready || len(rep.Problems) != 1 || rep.Problems[0] != "Ready is False (RenewalOverdue): server certificate: renewal overdue" {
			t.Errorf("rotate status of a RelayTrust that is not Ready: exit %d:\n%s", code, out)
		}
		leader.write(ctx, t, func(st *v1alpha1.RelayTrustStatus) {
			st.Conditions[0].Status, st.Conditions[0].Reason = metav1.ConditionTrue, "Valid"
		})
	})

	restore := rotatePollInterval
	rotatePollInterval = 50 * time.Millisecond
	t.Cleanup(func() { rotatePollInterval = restore })

	t.Run("wait follows a root rotation through its phases until it is done", func(t *testing.T) {
		stop := leader.onRootRequest(ctx, t, rootRotation...)
		code, out, stderr := rotate("root", "--now", "--wait", "--timeout", "1m")
		stop()
		if code != 0 {
			t.Fatalf("rotate root --wait: exit %d, stderr %q:\n%s", code, stderr, out)
		}
		if !strings.Contains(out, "the root rotation is done: status.rotations.root is 1 (was 0), phase Stable\n") {
			t.Errorf("rotate root --wait does not say it is done:\n%s", out)
		}
		var phases []string
		for _, line := range strings.Split(stderr, "\n") {
			if _, rest, ok := strings.Cut(line, ": phase "); ok {
				phases = append(phases, strings.Fields(rest)[0])
			}
		}
		// The first read may come before or after the leader's first step.
		if got := strings.TrimPrefix(strings.Join(phases, ","), "Stable,"); got != "Prepare,Activate,Retire,Stable" {
			t.Errorf("rotate root --wait showed phases %s, want Prepare,Activate,Retire,Stable:\n%s", strings.Join(phases, ","), stderr)
		}
		if !strings.Contains(stderr, "waiting for 1 cluster(s): cluster-2 (BundleNotAcknowledged); bundle acknowledged by 1 of 2") {
			t.Errorf("rotate root --wait did not show the cluster waited for:\n%s", stderr)
		}
	})

	t.Run("wait gives up at its timeout", func(t *testing.T) {
		code, out, stderr := rotate("intermediate", "--wait", "--timeout", "1s", "-o", "json")
		if code != 1 || !strings.Contains(stderr, "the signing intermediate rotation is not done: context deadline exceeded after --timeout 1s: phase Stable") ||
			!strings.Contains(stderr, "relayctl rotate status --context mgmt -n relay shows what it waits for") {
			t.Errorf("rotate intermediate --wait --timeout 1s with nobody rotating: exit %d, stderr %q; want 1 and where it stands", code, stderr)
		}
		var rep struct {
			Certificate string                     `json:"certificate"`
			Done        *bool                      `json:"done"`
			Status      *v1alpha1.RelayTrustStatus `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Certificate != "intermediate" || rep.Done == nil || *rep.Done || rep.Status == nil {
			t.Errorf("rotate intermediate --wait -o json that timed out: %v:\n%s", err, out)
		}
	})

	t.Run("wait ends when relay-server takes the request and does not rotate", func(t *testing.T) {
		const why = "a root rotation was asked for, but the signing and server secrets were not generated by relay-server, which cannot move them to a new root: replace them yourself"
		stop := leader.onRootRequest(ctx, t, func(rt *v1alpha1.RelayTrust) {
			meta.SetStatusCondition(&rt.Status.Conditions, metav1.Condition{Type: rotation.ConditionReady, Status: metav1.ConditionFalse, Reason: "Problem", Message: why})
		})
		code, _, stderr := rotate("root", "--wait", "--timeout", "1m")
		stop()
		if code != 1 || !strings.Contains(stderr, "relay-server took the request and did not rotate the root: "+why) {
			t.Errorf("rotate root --wait that relay-server declines: exit %d, stderr %q; want 1 and why", code, stderr)
		}
	})

	t.Run("a management cluster without the RelayTrust CRD could not run", func(t *testing.T) {
		env.MustKubectl(ctx, t, "", "--context", "mgmt", "delete", "crd", "relaytrusts.meshrelay.dev")
		const want = "the management cluster does not serve RelayTrust (relaytrusts.meshrelay.dev), which holds the rotations: its meshrelay CRDs are older than this relayctl; apply this release's CRDs"
		for _, args := range [][]string{{"status"}, {"root"}, {"server", "--dry-run=client"}} {
			var code int
			var stderr string
			// The API server stops serving the kind within moments of the delete.
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				code, _, stderr = rotate(args...)
				if strings.Contains(stderr, want) || time.Now().After(deadline) {
					break
				}
			}
			if code != 2 || !strings.Contains(stderr, want) {
				t.Errorf("rotate %v without the CRD: exit %d, stderr %q; want 2 and %q", args, code, stderr, want)
			}
		}
	})
}

// fakeLeader writes the RelayTrust's status as relay-server's leader does.
type fakeLeader struct {
	c   client.Client
	key types.NamespacedName
}

// write sets the status of a ready RelayTrust in phase Stable, as edit
// changes it.
func (l *fakeLeader) write(ctx context.Context, t *testing.T, edit func(*v1alpha1.RelayTrustStatus)) {
	t.Helper()
	if err := l.writeStatus(ctx, func(rt *v1alpha1.RelayTrust) {
		now := time.Now().Truncate(time.Second)
		cert := func(secret, sha string, life time.Duration) *v1alpha1.TrustCertificate {
			renew := metav1.NewTime(now.Add(life * 65 / 100))
			return &v1alpha1.TrustCertificate{Secret: secret, SHA256: sha, NotBefore: metav1.NewTime(now), NotAfter: metav1.NewTime(now.Add(life)), RenewAt: &renew, Generated: true}
		}
		since := metav1.NewTime(now)
		rt.Status = v1alpha1.RelayTrustStatus{
			ObservedGeneration: rt.Generation,
			Phase:              v1alpha1.PhaseStable,
			PhaseSince:         &since,
			Root:               cert("relay-root-tls-secret", strings.Repeat("a1", 32), 3650*24*time.Hour),
			Intermediate:       cert("relay-tls-signing-secret", strings.Repeat("b2", 32), 1825*24*time.Hour),
			Server:             cert("relay-server-tls-secret", strings.Repeat("c3", 32), 730*24*time.Hour),
			Bundle:             &v1alpha1.BundleStatus{SHA256: strings.Repeat("d4", 32), Roots: 1, Acknowledged: 2, Connected: 2},
			Rotations:          v1alpha1.RotationCounts{Server: 3},
			Conditions:         []metav1.Condition{{Type: rotation.ConditionReady, Status: metav1.ConditionTrue, Reason: "Valid", Message: "every certificate is valid", LastTransitionTime: since}},
		}
		// Every request in spec has been acted on.
		for _, c := range rotation.Certificates {
			if req := c.Request(&rt.Spec); req != nil {
				*observed(&rt.Status, c) = req.RequestedAt.DeepCopy()
			}
		}
		edit(&rt.Status)
	}); err != nil {
		t.Fatal(err)
	}
}

// writeStatus reads the RelayTrust, lets edit change it, and writes its
// status.
func (l *fakeLeader) writeStatus(ctx context.Context, edit func(*v1alpha1.RelayTrust)) error {
	var rt v1alpha1.RelayTrust
	if err := l.c.Get(ctx, l.key, &rt); err != nil {
		return err
	}
	edit(&rt)
	return l.c.Status().Update(ctx, &rt)
}

// observed is the field of status.observedRequests for c.
func observed(st *v1alpha1.RelayTrustStatus, c rotation.Certificate) **metav1.Time {
	switch c {
	case rotation.Intermediate:
		return &st.ObservedRequests.Intermediate
	case rotation.Server:
		return &st.ObservedRequests.Server
	}
	return &st.ObservedRequests.Root
}

// onRootRequest waits, in the background, for a root rotation request
// relay-server has not acted on, then writes the status as each of steps
// changes it, 300ms apart, the first one recording the request as acted
// on. stop waits for it to end.
func (l *fakeLeader) onRootRequest(ctx context.Context, t *testing.T, steps ...func(*v1alpha1.RelayTrust)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			var rt v1alpha1.RelayTrust
			if err := l.c.Get(ctx, l.key, &rt); err == nil && !rotation.Root.Seen(&rt) {
				break
			}
			if !sleep(ctx, 50*time.Millisecond) {
				return
			}
		}
		for i, edit := range steps {
			for {
				err := l.writeStatus(ctx, func(rt *v1alpha1.RelayTrust) {
					if i == 0 {
						rt.Status.ObservedRequests.Root = rt.Spec.RotateRoot.RequestedAt.DeepCopy()
					}
					since := metav1.NewTime(time.Now())
					rt.Status.PhaseSince = &since
					edit(rt)
				})
				if err == nil {
					break
				}
				if !apierrors.IsConflict(err) {
					if ctx.Err() == nil {
						t.Errorf("fake leader: %v", err)
					}
					return
				}
			}
			if !sleep(ctx, 300*time.Millisecond) {
				return
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// rootRotation are the steps of a root rotation as relay-server takes
// them: Prepare with a cluster that has not acknowledged the new bundle,
// Activate, Retire, then Stable with one more root rotation counted.
var rootRotation = []func(*v1alpha1.RelayTrust){
	func(rt *v1alpha1.RelayTrust) {
		rt.Status.Phase = v1alpha1.PhasePrepare
		rt.Status.Incoming = rt.Status.Root.DeepCopy()
		rt.Status.Incoming.SHA256 = strings.Repeat("e5", 32)
		rt.Status.Bundle.Roots, rt.Status.Bundle.Acknowledged = 2, 1
		rt.Status.Pending = []v1alpha1.PendingCluster{{Cluster: "cluster-2", Reason: v1alpha1.PendingBundleNotAcknowledged}}
		rt.Status.PendingCount = 1
	},
	func(rt *v1alpha1.RelayTrust) {
		rt.Status.Phase = v1alpha1.PhaseActivate
		rt.Status.Outgoing, rt.Status.Root, rt.Status.Incoming = rt.Status.Root, rt.Status.Incoming, nil
		rt.Status.Bundle.Acknowledged = 2
		rt.Status.Pending, rt.Status.PendingCount = nil, 0
	},
	func(rt *v1alpha1.RelayTrust) {
		rt.Status.Phase = v1alpha1.PhaseRetire
		rt.Status.Bundle.Roots = 1
	},
	func(rt *v1alpha1.RelayTrust) {
		rt.Status.Phase = v1alpha1.PhaseStable
		rt.Status.Outgoing = nil
		rt.Status.Rotations.Root++
	},
}

// sleep waits d, and says whether ctx is still running.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
