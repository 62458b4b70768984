package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// What TestCertManagerIssuesAndRenewsTheRelayCertificates watches while
// cert-manager renews: where each certificate is used, and relayctl check.

// poller calls a function every interval in the background until stop.
type poller struct {
	quit, ended chan struct{}
	once        sync.Once
}

func poll(every time.Duration, fn func()) *poller {
	p := &poller{quit: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(p.ended)
		for {
			fn()
			select {
			case <-p.quit:
				return
			case <-time.After(every):
			}
		}
	}()
	return p
}

// stop ends the calls and waits for the last; calling it again does
// nothing.
func (p *poller) stop() {
	p.once.Do(func() { close(p.quit) })
	<-p.ended
}

// checkLog runs relayctl check (check) every two seconds in the background
// until stop, and collects the runs that failed.
type checkLog struct {
	*poller
	mu     sync.Mutex
	runs   int
	failed []string
}

func runChecks(check func() (string, int)) *checkLog {
	l := &checkLog{}
	l.poller = poll(2*time.Second, func() {
		out, code := check()
		l.add(time.Now(), code, out)
	})
	return l
}

func (l *checkLog) add(at time.Time, code int, out string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs++
	if code != 0 {
		l.failed = append(l.failed, fmt.Sprintf("%s: exit %d:\n%s", at.Format(time.TimeOnly), code, out))
	}
}

func (l *checkLog) result() (int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs, slices.Clone(l.failed)
}

// serving dials relay-server as an agent does (SNI = authority, the root
// pinned) and returns the certificate it serves to a new handshake.
func serving(addr string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: config.DefaultAuthority, RootCAs: roots, MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// renewalWatch samples, twice a second, every relay certificate where it is
// stored (the secret cert-manager writes) and where it is used: the
// certificate relay-server serves to a new handshake and reports in its
// metrics, the one each agent reports in its metrics, and the one each
// agent told the server about over its open push stream. Certificates are
// named by their NotAfter in Unix seconds, as the metrics give it. It also
// records every sample in which a stream was not connected.
type renewalWatch struct {
	ctx          context.Context
	env          *testenv.Env
	mesh         *localmesh.Mesh
	workloads    []string
	agentMetrics map[string]string
	roots        *x509.CertPool
	*poller

	mu sync.Mutex
	// seen[where][notAfter] is when a certificate was first seen there.
	seen map[string]map[int64]time.Time
	// stored[cluster] are the certificates of the cluster's relay secret,
	// in the order they appeared.
	stored map[string][]*x509.Certificate
	gaps   []string
}

// newRenewalWatch starts sampling; stop ends it.
func newRenewalWatch(ctx context.Context, env *testenv.Env, mesh *localmesh.Mesh, workloads []string, agentMetrics map[string]string, roots *x509.CertPool) *renewalWatch {
	w := &renewalWatch{ctx: ctx, env: env, mesh: mesh, workloads: workloads, agentMetrics: agentMetrics, roots: roots,
		seen: map[string]map[int64]time.Time{}, stored: map[string][]*x509.Certificate{}}
	w.poller = poll(sampleEvery, w.sample)
	return w
}

// users are the places where cluster's certificate is used.
func (w *renewalWatch) users(cluster string) []string {
	if cluster == "mgmt" {
		return []string{"served by relay-server", "relay-server metrics"}
	}
	return []string{"agent " + cluster + " metrics", "reported by agent " + cluster + " to relay-server"}
}

// sampleEvery is how often renewalWatch samples.
const sampleEvery = 500 * time.Millisecond

// pickupWithin bounds how long after cert-manager stores a certificate the
// server and the agents may take to use it: they watch their secrets, so it
// is well under a second; the bound leaves room for a busy machine.
const pickupWithin = 15 * time.Second

func (w *renewalWatch) sample() {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	note := func(where string, notAfter int64) {
		if w.seen[where] == nil {
			w.seen[where] = map[int64]time.Time{}
		}
		if _, ok := w.seen[where][notAfter]; !ok && notAfter != 0 {
			w.seen[where][notAfter] = now
		}
	}
	secrets := map[string]string{"mgmt": config.DefaultServerTLSSecret}
	for _, c := range w.workloads {
		secrets[c] = config.DefaultClientTLSSecret
	}
	for c, name := range secrets {
		var s corev1.Secret
		if err := w.env.Cluster(c).Client.Get(w.ctx, types.NamespacedName{Namespace: config.DefaultNamespace, Name: name}, &s); err != nil {
			continue
		}
		certs, err := pki.DecodeCertificates(s.Data[relaysecret.KeyTLSCert])
		if err != nil {
			continue
		}
		na := certs[0].NotAfter.Unix()
		if _, ok := w.seen["secret "+c][na]; !ok {
			w.stored[c] = append(w.stored[c], certs[0])
		}
		note("secret "+c, na)
	}
	if cert, err := serving(w.mesh.ServerAddr, w.roots); err == nil {
		note("served by relay-server", cert.NotAfter.Unix())
	}
	server := testenv.ScrapeMetrics("http://" + w.mesh.ServerMetrics + "/metrics")
	note("relay-server metrics", int64(server[`relay_certificate_expiry_timestamp_seconds{certificate="server"}`]))
	for _, c := range w.workloads {
		agent := testenv.ScrapeMetrics("http://" + w.agentMetrics[c] + "/metrics")
		note("agent "+c+" metrics", int64(agent["relay_agent_client_certificate_expiry_timestamp_seconds"]))
		note("reported by agent "+c+" to relay-server", int64(server[`relay_client_certificate_expiry_timestamp_seconds{cluster="`+c+`"}`]))
		for _, s := range []string{"push", "pull"} {
			// 2 for a moment: the agent opens its streams on a connection
			// made with its renewed certificate before closing the old.
			if v, ok := server[`relay_`+s+`_clients_connected{cluster="`+c+`"}`]; v != 1 && v != 2 {
				w.gaps = append(w.gaps, fmt.Sprintf("%s: relay-server counted %v %s streams of %s (scraped: %v)", now.Format(time.TimeOnly), v, s, c, ok))
			}
			if v, ok := agent[`relay_agent_stream_connected{stream="`+s+`"}`]; v != 1 {
				w.gaps = append(w.gaps, fmt.Sprintf("%s: agent %s had its %s stream at %v (scraped: %v)", now.Format(time.TimeOnly), c, s, v, ok))
			}
		}
	}
}

// renewed returns the certificates of cluster that appeared after since.
func (w *renewalWatch) renewed(cluster string, since time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	for _, cert := range w.stored[cluster] {
		if w.seen["secret "+cluster][cert.NotAfter.Unix()].After(since) {
			out = append(out, cert)
		}
	}
	return out
}

// done says why not every cluster has had n certificates since, each
// seen where it is used; nil once they all have.
func (w *renewalWatch) done(since time.Time, n int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range append([]string{"mgmt"}, w.workloads...) {
		certs := w.renewed(c, since)
		if len(certs) < n {
			return fmt.Errorf("%s: %d certificates issued since the patch, want %d", c, len(certs), n)
		}
		for _, cert := range certs[:n] {
			for _, u := range w.users(c) {
				if _, ok := w.seen[u][cert.NotAfter.Unix()]; !ok {
					return fmt.Errorf("%s: certificate %s (notAfter %s) not yet %s", c, cert.SerialNumber.Text(16), cert.NotAfter.Format(time.TimeOnly), u)
				}
			}
		}
	}
	return nil
}

// report logs each certificate issued since: its lifetime, how long before
// the previous one's expiry it was issued, and how long each user took to
// load it after it was stored.
func (w *renewalWatch) report(t *testing.T, since time.Time) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range append([]string{"mgmt"}, w.workloads...) {
		var prev *x509.Certificate
		for _, cert := range w.renewed(c, since) {
			na := cert.NotAfter.Unix()
			stored := w.seen["secret "+c][na]
			line := fmt.Sprintf("%s: serial %s stored %.1fs after the patch, lifetime %s", c, cert.SerialNumber.Text(16),
				stored.Sub(since).Seconds(), cert.NotAfter.Sub(cert.NotBefore))
			if prev != nil {
				line += fmt.Sprintf(", issued %s before the previous one expired", prev.NotAfter.Sub(cert.NotBefore).Round(time.Second))
			}
			for _, u := range w.users(c) {
				switch at, ok := w.seen[u][na]; {
				case !ok:
				case at.Sub(stored) < sampleEvery:
					line += fmt.Sprintf("; %s in the same sample", u)
				default:
					line += fmt.Sprintf("; %s %.1fs later", u, at.Sub(stored).Seconds())
				}
			}
			t.Log(line)
			prev = cert
		}
	}
}

// problems are the renewals that did not go as they should: a lifetime
// other than the patch's, a renewal after expiry or long before
// renewBefore, a certificate its users took longer than pickupWithin to
// load, and any stream that was not connected.
func (w *renewalWatch) problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, c := range append([]string{"mgmt"}, w.workloads...) {
		stored := w.stored[c]
		for _, cert := range stored {
			na := cert.NotAfter.Unix()
			for _, u := range w.users(c) {
				if at, ok := w.seen[u][na]; ok && at.Sub(w.seen["secret "+c][na]) > pickupWithin {
					out = append(out, fmt.Sprintf("%s: certificate %s was %s %s after cert-manager stored it, want within %s",
						c, cert.SerialNumber.Text(16), u, at.Sub(w.seen["secret "+c][na]).Round(time.Second), pickupWithin))
				}
			}
		}
		// The first is the overlay's 24h certificate, the second the
		// reissue with the patch's lifetime, the others renewals.
		for i, cert := range stored[min(1, len(stored)):] {
			if life := cert.NotAfter.Sub(cert.NotBefore); life != shortDuration {
				out = append(out, fmt.Sprintf("%s: certificate %s lives %s, want the patch's %s", c, cert.SerialNumber.Text(16), life, shortDuration))
			}
			if i == 0 {
				continue
			}
			lead := stored[i].NotAfter.Sub(cert.NotBefore)
			if lead <= 0 || lead > shortRenewBefore+5*time.Second {
				out = append(out, fmt.Sprintf("%s: renewed %s before the previous certificate expired, want about renewBefore (%s)", c, lead, shortRenewBefore))
			}
		}
	}
	return append(out, w.gaps...)
}
