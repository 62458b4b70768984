package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestRotationScenarios runs, on one mesh (management cluster, two
// workload clusters, the rendered overlays, relay-webhook on each cluster,
// relay-server with the default lifetimes and a root rotation overlap of
// 15s), with a prober per workload cluster making a fresh mutual TLS
// handshake every 100 ms as its agent does:
//   - a root rotation during which relay-server is killed (SIGKILL) in
//     Prepare, in Activate and in Retire, and started again each time: it
//     resumes and completes, and no handshake fails once relay-server is
//     ready again;
//   - relay-root-tls-secret deleted alone: relay-server makes no unrelated
//     root, says what is wrong and how to recover, keeps serving, and is
//     whole again once relayctl restore writes the secret back;
//   - a generated server certificate, then intermediate, then root found
//     expired when relay-server starts: each is replaced, and the agents
//     come back (after the intermediate and the root, once relayctl
//     register gives their clusters a fresh token, and the new root).
func TestRotationScenarios(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	m := startRotationMesh(ctx, t, "--root-rotation-overlap=15s")
	ps, err := startProbers(ctx, m.env, m.mesh.ServerAddr, m.workloads)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.stop()
	t.Run("a root rotation resumes and completes after relay-server is killed in Prepare, Activate and Retire", func(t *testing.T) {
		rootRotationKilledInEachPhase(ctx, t, m, ps)
	})
	t.Run("relay-root-tls-secret deleted alone: no unrelated root, the fix is named, handshakes go on, relayctl restore mends it", func(t *testing.T) {
		rootSecretDeletedAlone(ctx, t, m, ps)
	})
	t.Run("a generated certificate found expired at start is replaced and the agents come back", func(t *testing.T) {
		expiredGeneratedCertificatesReplacedAtStart(ctx, t, m, ps)
	})
}

// noNewFailures fails t when the probers counted failed handshakes since
// failedBefore (their failed count when the step began).
func noNewFailures(t *testing.T, ps probers, failedBefore int, when string) {
	t.Helper()
	ok, failed, skipped, failures := ps.counts()
	t.Logf("handshakes so far: %d ok, %d failed, %d not counted while relay-server was down", ok, failed, skipped)
	if failed > failedBefore {
		t.Errorf("%d handshakes failed %s; the first failures of the run:\n%s", failed-failedBefore, when, strings.Join(failures, "\n"))
	}
}

// healthy waits until relay-server is running, no root rotation is under
// way, every agent holds its streams and relayctl check passes, so that
// each scenario begins on a whole mesh even when the one before failed.
func healthy(t *testing.T, m *rotationMesh) {
	t.Helper()
	if exited, _ := m.server.Exited(); exited {
		m.startServer(t)
	}
	testenv.Eventually(t, "the RelayTrust is Stable", 3*time.Minute, func() error {
		rt, err := readTrust(m.ctx, m.env.Cluster("mgmt"))
		if err != nil {
			return err
		}
		if phaseOf(rt) != meshv1alpha1.PhaseStable {
			return fmt.Errorf("phase %s%s", phaseOf(rt), describeTrust(rt))
		}
		return nil
	})
	m.waitConnected(t, 2*time.Minute)
	testenv.Eventually(t, "relayctl check passes", time.Minute, func() error {
		if out, code := m.check(); code != 0 {
			return fmt.Errorf("exit %d:\n%s", code, out)
		}
		return nil
	})
}

// waitPhase reads the RelayTrust every 100 ms until its phase is phase.
func waitPhase(ctx context.Context, t *testing.T, mgmt *testenv.Cluster, phase meshv1alpha1.RotationPhase, within time.Duration) *meshv1alpha1.RelayTrust {
	t.Helper()
	var rt *meshv1alpha1.RelayTrust
	deadline := time.Now().Add(within)
	for {
		var err error
		rt, err = readTrust(ctx, mgmt)
		if err == nil && phaseOf(rt) == phase {
			return rt
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("RelayTrust did not reach phase %s within %s: %v", phase, within, err)
			}
			t.Fatalf("RelayTrust did not reach phase %s within %s: it is %s%s: is relay-server rotating its root?", phase, within, phaseOf(rt), describeTrust(rt))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// secretOf reads secret name of the relay namespace on cluster.
func secretOf(ctx context.Context, c *testenv.Cluster, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	if err := c.Client.Get(ctx, types.NamespacedName{Namespace: config.DefaultNamespace, Name: name}, &s); err != nil {
		return nil, fmt.Errorf("%s: failed to read secret %s/%s: %w", c.Name, config.DefaultNamespace, name, err)
	}
	return &s, nil
}

// fingerprints returns the SHA-256 fingerprints of the PEM certificates in
// data.
func fingerprints(data []byte) ([]string, error) {
	certs, err := pki.DecodeCertificates(data)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range certs {
		out = append(out, pki.Fingerprint(c))
	}
	return out, nil
}

// rootRotationKilledInEachPhase asks relay-server for a root rotation and
// kills it in each phase. Prepare and Activate last at least the overlap;
// Retire waits only for the agents to acknowledge the bundle without the
// old root, so cluster-2's relay-webhook is stopped once its agent holds a
// certificate under the new root: its agent cannot write the bundle into
// relay-root-tls-secret (failurePolicy Fail), cannot acknowledge it, and
// Retire holds until relay-webhook is back, as with any cluster whose
// webhook is down.
func rootRotationKilledInEachPhase(ctx context.Context, t *testing.T, m *rotationMesh, ps probers) {
	healthy(t, m)
	mgmt := m.env.Cluster("mgmt")
	var before *meshv1alpha1.RelayTrust
	testenv.Eventually(t, "the RelayTrust is Stable with a root", time.Minute, func() (err error) {
		if before, err = readTrust(ctx, mgmt); err != nil {
			return err
		}
		if phaseOf(before) != meshv1alpha1.PhaseStable || before.Status.Root == nil {
			return fmt.Errorf("phase %s%s", phaseOf(before), describeTrust(before))
		}
		return nil
	})
	oldRoot := before.Status.Root.SHA256
	_, failedBefore, _, _ := ps.counts()

	// Without --now: Prepare and Activate last at least the overlap.
	if stdout, stderr, code := m.mesh.Relayctl(ctx, "rotate", "root", "--context", "mgmt", "--reason", "e2e: relay-server killed in each phase"); code != 0 {
		t.Fatalf("relayctl rotate root: exit %d:\n%s%s", code, stdout, stderr)
	}

	var newRoot string
	for _, phase := range []meshv1alpha1.RotationPhase{meshv1alpha1.PhasePrepare, meshv1alpha1.PhaseActivate, meshv1alpha1.PhaseRetire} {
		rt := waitPhase(ctx, t, mgmt, phase, 2*time.Minute)
		if phase == meshv1alpha1.PhasePrepare {
			testenv.Eventually(t, "in Prepare, status.incoming names the new root", 10*time.Second, func() (err error) {
				if rt, err = readTrust(ctx, mgmt); err != nil {
					return err
				}
				if in := rt.Status.Incoming; phaseOf(rt) != meshv1alpha1.PhasePrepare || in == nil || in.SHA256 == oldRoot {
					return fmt.Errorf("phase %s%s; the old root is %s", phaseOf(rt), describeTrust(rt), oldRoot[:12])
				}
				return nil
			})
			newRoot = rt.Status.Incoming.SHA256
		}
		if phase == meshv1alpha1.PhaseActivate {
			holdRetire(ctx, t, m, newRoot)
		}
		ps.serverDown()
		if err := m.server.Kill(); err != nil {
			t.Fatal(err)
		}
		killed, err := readTrust(ctx, mgmt)
		if err != nil {
			t.Fatal(err)
		}
		if phaseOf(killed) != phase {
			t.Fatalf("relay-server was to be killed in %s, but the RelayTrust had moved on to %s%s", phase, phaseOf(killed), describeTrust(killed))
		}
		t.Logf("relay-server killed in %s%s", phase, describeTrust(killed))
		if phase == meshv1alpha1.PhaseRetire {
			// cluster-2's agent may acknowledge once relay-server is back.
			m.startWebhook(t, "cluster-2")
		}
		m.startServer(t)
		ps.serverUp()
		m.waitConnected(t, time.Minute)
	}

	var after *meshv1alpha1.RelayTrust
	testenv.Eventually(t, "the root rotation completes", 3*time.Minute, func() (err error) {
		if after, err = readTrust(ctx, mgmt); err != nil {
			return err
		}
		if phaseOf(after) != meshv1alpha1.PhaseStable || after.Status.Rotations.Root != before.Status.Rotations.Root+1 {
			return fmt.Errorf("phase %s%s", phaseOf(after), describeTrust(after))
		}
		return nil
	})
	if after.Status.Root == nil || after.Status.Root.SHA256 != newRoot {
		t.Errorf("after the rotation status.root is %+v, want the root that came in during Prepare (%s)", after.Status.Root, newRoot)
	}
	for _, c := range append([]string{"mgmt"}, m.workloads...) {
		cl := m.env.Cluster(c)
		_, noBundles := cl.Client.RESTMapper().RESTMapping(schema.GroupKind{Group: certificatesv1.GroupName, Kind: "ClusterTrustBundle"}, certificatesv1.SchemeGroupVersion.Version)
		testenv.Eventually(t, c+": relay-root-tls-secret's ca.crt and the ClusterTrustBundle hold the new root only", 30*time.Second, func() error {
			s, err := secretOf(ctx, cl, config.DefaultRootTLSSecret)
			if err != nil {
				return err
			}
			got, err := fingerprints(s.Data[relaysecret.KeyCACert])
			if err != nil {
				return err
			}
			if !slices.Equal(got, []string{newRoot}) {
				return fmt.Errorf("ca.crt holds %v, want [%s] (the old root was %s)", got, newRoot, oldRoot)
			}
			if noBundles != nil {
				return nil
			}
			var b certificatesv1.ClusterTrustBundle
			name := meshv1alpha1.TrustBundleName(config.DefaultNamespace)
			if err := cl.Client.Get(ctx, types.NamespacedName{Name: name}, &b); err != nil {
				return fmt.Errorf("ClusterTrustBundle %s: %w", name, err)
			}
			if got, err = fingerprints([]byte(b.Spec.TrustBundle)); err != nil || !slices.Equal(got, []string{newRoot}) {
				return fmt.Errorf("ClusterTrustBundle %s holds %v (%v), want [%s]", name, got, err, newRoot)
			}
			return nil
		})
	}
	healthy(t, m)
	noNewFailures(t, ps, failedBefore, "once relay-server was ready after each kill")
}

// holdRetire, called in Activate, waits until cluster-2's live client
// certificate chains to the new root, then stops cluster-2's relay-webhook
// so that Retire waits for its agent.
func holdRetire(ctx context.Context, t *testing.T, m *rotationMesh, newRoot string) {
	t.Helper()
	mgmt := m.env.Cluster("mgmt")
	testenv.Eventually(t, "cluster-2's client certificate chains to the new root", time.Minute, func() error {
		var kc meshv1alpha1.KubernetesCluster
		if err := mgmt.Client.Get(ctx, types.NamespacedName{Namespace: config.DefaultNamespace, Name: "cluster-2"}, &kc); err != nil {
			return err
		}
		if cc := kc.Status.ClientCertificate; cc == nil || cc.RootSHA256 != newRoot {
			return fmt.Errorf("status.clientCertificate is %+v, want rootSHA256 %s", cc, newRoot)
		}
		return nil
	})
	if err := m.webhooks["cluster-2"].Stop(); err != nil {
		t.Fatal(err)
	}
	if rt, err := readTrust(ctx, mgmt); err != nil || phaseOf(rt) != meshv1alpha1.PhaseActivate {
		t.Fatalf("Activate ended before cluster-2's relay-webhook was stopped (%v): raise --root-rotation-overlap", err)
	}
}

// rootSecretDeletedAlone deletes relay-root-tls-secret on the management
// cluster, the other relay secrets left as they are, after relayctl
// backup saved it.
func rootSecretDeletedAlone(ctx context.Context, t *testing.T, m *rotationMesh, ps probers) {
	healthy(t, m)
	mgmt := m.env.Cluster("mgmt")
	saved, err := secretOf(ctx, mgmt, config.DefaultRootTLSSecret)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.DecodeCertificates(saved.Data[relaysecret.KeyCACert])
	if err != nil {
		t.Fatal(err)
	}
	savedRoots, _ := fingerprints(saved.Data[relaysecret.KeyCACert])
	backupDir := filepath.Join(t.TempDir(), "backup")
	if _, stderr, code := m.mesh.Relayctl(ctx, "backup", "--context", "mgmt", "--out", backupDir); code != 0 {
		t.Fatalf("relayctl backup: exit %d: %s", code, stderr)
	}
	_, failedBefore, _, _ := ps.counts()
	deleted := time.Now()
	// relay-webhook's guard refuses to remove a root that still anchors a
	// client certificate, unless told to.
	m.env.MustKubectl(ctx, t, "", "--context", "mgmt", "-n", config.DefaultNamespace, "annotate", "secret", config.DefaultRootTLSSecret, meshv1alpha1.AllowRootRemovalAnnotation+"=true")
	m.env.MustKubectl(ctx, t, "", "--context", "mgmt", "-n", config.DefaultNamespace, "delete", "secret", config.DefaultRootTLSSecret)

	var said string
	testenv.Eventually(t, "relay-server says relay-root-tls-secret is missing and how to recover", time.Minute, func() error {
		said = rootReport(ctx, m, deleted)
		if said == "" {
			return fmt.Errorf("no Event, relay-server log line or /readyz answer since %s names secret %s with a fix (relayctl restore, or a backup)",
				deleted.Format(time.TimeOnly), config.DefaultRootTLSSecret)
		}
		return nil
	})
	t.Logf("relay-server reported: %s", said)

	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	// For 20 seconds: no other root appears, and what worked still works.
	for watchUntil := time.Now().Add(20 * time.Second); time.Now().Before(watchUntil); time.Sleep(2 * time.Second) {
		problem := ""
		s, err := secretOf(ctx, mgmt, config.DefaultRootTLSSecret)
		switch {
		case err != nil && !apierrors.IsNotFound(err):
			problem = err.Error()
		case err == nil:
			if got, _ := fingerprints(s.Data[relaysecret.KeyCACert]); !slices.Equal(got, savedRoots) {
				problem = fmt.Sprintf("relay-root-tls-secret came back with roots %v, not the deleted %v: relay-server made an unrelated root", got, savedRoots)
			}
		}
		if _, err := serving(m.mesh.ServerAddr, pool); err != nil {
			problem = fmt.Sprintf("relay-server's certificate no longer verifies to the deleted root: %v", err)
		}
		if err := m.connected(); err != nil {
			problem = fmt.Sprintf("the agents lost their streams after the root secret was deleted: %v", err)
		}
		if problem != "" {
			t.Errorf("%s after the deletion: %s", time.Since(deleted).Round(time.Second), problem)
			break
		}
	}
	noNewFailures(t, ps, failedBefore, "while relay-root-tls-secret was missing")

	stdout, stderr, code := m.mesh.Relayctl(ctx, "restore", "--context", "mgmt", "--from", backupDir)
	if code != 0 {
		t.Fatalf("relayctl restore: exit %d:\n%s%s", code, stdout, stderr)
	}
	restored, err := secretOf(ctx, mgmt, config.DefaultRootTLSSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := fingerprints(restored.Data[relaysecret.KeyCACert]); !slices.Equal(got, savedRoots) {
		t.Errorf("restored ca.crt holds %v, want %v", got, savedRoots)
	}
	testenv.Eventually(t, "relay-server is ready", time.Minute, func() error {
		if code, body := readyz(m); code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s", code, body)
		}
		return nil
	})
	healthy(t, m)
	noNewFailures(t, ps, failedBefore, "while relay-root-tls-secret was missing or after it was restored")
}

// rootReport returns what relay-server said since about the missing
// relay-root-tls-secret with a fix: an Event on the management cluster, a
// line of its log, or its /readyz answer; "" when nothing says both.
func rootReport(ctx context.Context, m *rotationMesh, since time.Time) string {
	names := func(s string) bool {
		l := strings.ToLower(s)
		return strings.Contains(s, config.DefaultRootTLSSecret) && (strings.Contains(l, "restore") || strings.Contains(l, "backup"))
	}
	var events corev1.EventList
	if err := m.env.Cluster("mgmt").Client.List(ctx, &events, client.InNamespace(config.DefaultNamespace)); err == nil {
		for _, e := range events.Items {
			at := e.LastTimestamp.Time
			if at.IsZero() {
				at = e.EventTime.Time
			}
			if !at.Before(since.Add(-time.Second)) && names(e.Message) {
				return fmt.Sprintf("Event %s %s on %s/%s: %s", e.Type, e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
			}
		}
	}
	if code, body := readyz(m); code != http.StatusOK && names(body) {
		return fmt.Sprintf("/readyz %d: %s", code, body)
	}
	if data, err := os.ReadFile(m.server.Log); err == nil {
		for line := range strings.Lines(string(data)) {
			if names(line) {
				return "log: " + strings.TrimSpace(line)
			}
		}
	}
	return ""
}

// readyz returns relay-server's /readyz status code and body (0 when it
// does not answer).
func readyz(m *rotationMesh) (int, string) {
	resp, err := http.Get("http://" + m.mesh.ServerMetrics + "/readyz?verbose")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// expiringIn is how long each certificate written in place of a generated
// one has left when written: relay-webhook admits no expired certificate,
// so it is written valid and relay-server starts once it has expired.
const expiringIn = 8 * time.Second

// expiring returns options for a certificate that expires expiringIn from
// now.
func expiring(cn string, dnsNames ...string) pki.Options {
	now := time.Now()
	return pki.Options{CommonName: cn, Organization: []string{relaysecret.Organization}, DNSNames: dnsNames, Now: now.Add(-time.Minute), TTL: time.Minute + expiringIn}
}

// patchSecret merges data (a nil value removes the key) and annotations
// into secret name of the management cluster, through the API server and
// relay-webhook as a person's kubectl patch would.
func patchSecret(ctx context.Context, t *testing.T, m *rotationMesh, name string, data map[string][]byte, annotations map[string]string) {
	t.Helper()
	body := map[string]any{"data": data}
	if len(annotations) > 0 {
		body["metadata"] = map[string]any{"annotations": annotations}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{}
	s.Namespace, s.Name = config.DefaultNamespace, name
	if err := m.env.Cluster("mgmt").Client.Patch(ctx, s, client.RawPatch(types.MergePatchType, raw)); err != nil {
		t.Fatalf("failed to write an expiring certificate into secret %s: %v", name, err)
	}
}

// expiredGeneratedCertificatesReplacedAtStart stops relay-server, writes a
// certificate that expires within seconds in place of a generated one,
// waits until it has expired and starts relay-server: the server
// certificate (the agents reconnect by themselves), then the intermediate
// (the client certificates it issued are refused once it is replaced, as
// they would have expired with it: the clusters are registered again),
// then the root (an expired self-signed root of a new key, with an
// intermediate and a server certificate under it, expired too: the
// clusters are registered again with the new root).
func expiredGeneratedCertificatesReplacedAtStart(ctx context.Context, t *testing.T, m *rotationMesh, ps probers) {
	healthy(t, m)
	mgmt := m.env.Cluster("mgmt")
	material := func(t *testing.T, k relaysecret.Kind, name string) *relaysecret.Material {
		t.Helper()
		s, err := secretOf(ctx, mgmt, name)
		if err != nil {
			t.Fatal(err)
		}
		mat, errs := relaysecret.Decode(k, s.Data, "")
		if len(errs) > 0 {
			t.Fatalf("secret %s: %s", name, relaysecret.Message(errs))
		}
		return mat
	}
	// replaced waits until secret name holds a certificate other than
	// expired that is valid now, and returns tls.crt's chain.
	replaced := func(t *testing.T, name string, expired *x509.Certificate) []*x509.Certificate {
		t.Helper()
		var chain []*x509.Certificate
		testenv.Eventually(t, "secret "+name+" holds a valid certificate in place of the expired one", time.Minute, func() error {
			s, err := secretOf(ctx, mgmt, name)
			if err != nil {
				return err
			}
			if chain, err = pki.DecodeCertificates(s.Data[relaysecret.KeyTLSCert]); err != nil {
				return err
			}
			got := chain[0]
			if got.Equal(expired) {
				return fmt.Errorf("it still holds the certificate that expired at %s", expired.NotAfter.Format(time.TimeOnly))
			}
			if now := time.Now(); now.After(got.NotAfter) || now.Before(got.NotBefore) {
				return fmt.Errorf("it holds a certificate valid from %s to %s", got.NotBefore, got.NotAfter)
			}
			if s.Labels[meshv1alpha1.GeneratedLabel] != "true" {
				return fmt.Errorf("it lost label %s=true", meshv1alpha1.GeneratedLabel)
			}
			return nil
		})
		return chain
	}
	// restart stops relay-server, calls write, waits until the expiring
	// certificates have expired and starts relay-server again.
	restart := func(t *testing.T, write func() time.Time) {
		t.Helper()
		ps.serverDown()
		if err := m.server.Stop(); err != nil {
			t.Fatal(err)
		}
		notAfter := write()
		time.Sleep(time.Until(notAfter) + time.Second)
		m.startServer(t)
	}
	// agentsBack registers every workload cluster again with relayctl
	// register and flags, waits until their agents hold their streams
	// and relayctl check passes, and then for five seconds counts the
	// probers' handshakes, which must all succeed.
	agentsBack := func(t *testing.T, flags ...string) {
		t.Helper()
		for _, c := range m.workloads {
			m.register(t, c, flags...)
		}
		m.waitConnected(t, 2*time.Minute)
		_, failedBefore, _, _ := ps.counts()
		ps.serverUp()
		healthy(t, m)
		time.Sleep(5 * time.Second)
		noNewFailures(t, ps, failedBefore, "once the agents were back")
	}
	authority := config.DefaultAuthority
	serverNames := []string{"*." + config.DefaultNamespace, authority}

	t.Run("server certificate", func(t *testing.T) {
		healthy(t, m)
		_, failedBefore, _, _ := ps.counts()
		root := material(t, relaysecret.Root, config.DefaultRootTLSSecret)
		var expired *pki.Certified
		restart(t, func() time.Time {
			var err error
			if expired, err = root.Certified().IssueServer(expiring(authority, serverNames...)); err != nil {
				t.Fatal(err)
			}
			key, _ := expired.KeyPEM()
			patchSecret(ctx, t, m, config.DefaultServerTLSSecret, map[string][]byte{relaysecret.KeyTLSCert: expired.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: expired.CAPEM()}, nil)
			return expired.Cert.NotAfter
		})
		ps.serverUp()
		replaced(t, config.DefaultServerTLSSecret, expired.Cert)
		m.waitConnected(t, time.Minute)
		noNewFailures(t, ps, failedBefore, "once relay-server was ready with its expired certificate replaced")
	})

	t.Run("intermediate", func(t *testing.T) {
		healthy(t, m)
		root := material(t, relaysecret.Root, config.DefaultRootTLSSecret)
		var expired *pki.Certified
		restart(t, func() time.Time {
			var err error
			if expired, err = root.Certified().NewIntermediateCA(expiring(relaysecret.SigningCommonName)); err != nil {
				t.Fatal(err)
			}
			key, _ := expired.KeyPEM()
			patchSecret(ctx, t, m, config.DefaultSigningTLSSecret, map[string][]byte{relaysecret.KeyTLSCert: expired.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: expired.CAPEM()}, nil)
			return expired.Cert.NotAfter
		})
		replaced(t, config.DefaultSigningTLSSecret, expired.Cert)
		// The client certificates an intermediate issued expire with it
		// (their lifetime is capped by its own), and relay-server admits
		// none of them once it has replaced it: registering the clusters
		// again gives each a fresh token, with which its agent
		// bootstraps from the new intermediate.
		agentsBack(t)
	})

	t.Run("root", func(t *testing.T) {
		healthy(t, m)
		old := material(t, relaysecret.Root, config.DefaultRootTLSSecret)
		var expired, intermediate, server *pki.Certified
		restart(t, func() time.Time {
			var err error
			if expired, err = pki.NewRootCA(expiring(relaysecret.RootCommonName)); err != nil {
				t.Fatal(err)
			}
			if intermediate, err = expired.NewIntermediateCA(expiring(relaysecret.SigningCommonName)); err != nil {
				t.Fatal(err)
			}
			if server, err = expired.IssueServer(expiring(authority, serverNames...)); err != nil {
				t.Fatal(err)
			}
			write := func(name string, c *pki.Certified, annotations map[string]string) {
				key, _ := c.KeyPEM()
				data := map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: c.CAPEM()}
				if name == config.DefaultSigningTLSSecret {
					// The CA it replaced was under the old root.
					data[relaysecret.KeyPreviousCACert] = nil
				}
				patchSecret(ctx, t, m, name, data, annotations)
			}
			// relay-webhook refuses to remove a root that still anchors
			// the agents' certificates, or one the other secrets chain to,
			// unless told to.
			write(config.DefaultRootTLSSecret, expired, map[string]string{meshv1alpha1.AllowRootRemovalAnnotation: "true", meshv1alpha1.AllowChainBreakAnnotation: "true"})
			write(config.DefaultSigningTLSSecret, intermediate, nil)
			write(config.DefaultServerTLSSecret, server, nil)
			return expired.Cert.NotAfter
		})
		newRoot := replaced(t, config.DefaultRootTLSSecret, expired.Cert)
		if newRoot[0].Equal(old.Cert) {
			t.Fatal("relay-server put back the root it had before the test wrote the expired one")
		}
		for name, expired := range map[string]*x509.Certificate{config.DefaultSigningTLSSecret: intermediate.Cert, config.DefaultServerTLSSecret: server.Cert} {
			chain := replaced(t, name, expired)
			roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(newRoot[0])
			for _, c := range chain[1:] {
				intermediates.AddCert(c)
			}
			if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("secret %s: its new certificate does not chain to the new root: %v", name, err)
			}
		}
		// The agents trust the old root only: registering their clusters
		// again (--force: their copy of the root differs) copies the new
		// root and gives each a fresh token, with which its agent
		// bootstraps under it.
		agentsBack(t, "--force")
	})
}
