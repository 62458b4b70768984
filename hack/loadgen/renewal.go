package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/backoff"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/relay/agent"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// The renewal storm's certificates live renewalTTL, so that the agent's
// renewal jitter (up to a fifth more of the grace period) spreads their
// renewal times over well under a minute: 0.2 × 0.35 × 11 minutes (the
// TTL and its backdate) is 46 s.
const renewalTTL = 10 * time.Minute

// maxRenewalJitter is the largest jitter fraction agent.DefaultJitter
// draws.
const maxRenewalJitter = 0.2

// renewing is one agent's renewal: when it was due, its attempts and how
// they ended.
type renewing struct {
	due, notAfter time.Time
	// attempts are when each Renew call began; the first is at due or
	// after.
	attempts []time.Time
	// renewed is when the call that succeeded ended; zero if none did.
	renewed time.Time
	// refusals counts the failed calls by their status message.
	refusals map[string]int
}

// renewalStats are what the agents' side of the storm saw.
type renewalStats struct {
	inFlight, peakInFlight atomic.Int64
}

// measureRenewal restarts relay-server with the signing budget a
// deployment has (--max-concurrent-signing, the per-cluster Renew rate by
// default), connects n agents whose client certificates all reach their
// renewal time within the same minute, and lets each renew as relay-agent
// does: at its renewal time (pki.RenewalTime with agent.DefaultJitter),
// over a new mutual TLS connection with its current certificate, retrying
// a failure after the rotator's backoff, and moving its streams to a
// connection with the new certificate.
func measureRenewal(ctx context.Context, e *environment, o options) error {
	n := o.agents
	if err := e.register(ctx, n, o.concurrency); err != nil {
		return err
	}
	args := []string{"--peer-signing-rate", "1000000", "--peer-signing-burst", "1000000", "--max-concurrent-signing", strconv.Itoa(o.signingCap)}
	if err := e.restartServer(ctx, args); err != nil {
		return fmt.Errorf("failed to restart relay-server with --max-concurrent-signing %d: %w", o.signingCap, err)
	}
	uids, err := e.clusterUIDs(ctx)
	if err != nil {
		return err
	}
	// The earliest renewal time comes once the agents have connected.
	lead := 20*time.Second + time.Duration(n)*6*time.Millisecond
	certs, err := e.dueCerts(n, uids, time.Now().Add(lead))
	if err != nil {
		return err
	}
	ratio := config.DefaultRotationGracePeriodRatio
	work := make([]*renewing, n)
	for i := range certs {
		leaf := certs[i].Leaf
		due, err := pki.RenewalTime(leaf, ratio, agent.DefaultJitter())
		if err != nil {
			return err
		}
		work[i] = &renewing{due: due, notAfter: leaf.NotAfter, refusals: map[string]int{}}
	}
	first := slices.MinFunc(work, func(a, b *renewing) int { return a.due.Compare(b.due) }).due
	last := slices.MaxFunc(work, func(a, b *renewing) int { return a.due.Compare(b.due) }).due

	f, err := e.connectFleet(ctx, certs, o.concurrency)
	if err != nil {
		return err
	}
	defer f.stop()
	connected := time.Now()

	// The server's side, sampled while the storm lasts.
	sampler := startRenewalSampler(ctx, e.metrics)
	var prof <-chan error
	if o.cpuProfile > 0 {
		p := make(chan error, 1)
		prof = p
		go func() {
			time.Sleep(time.Until(first))
			p <- <-e.cpuProfile(ctx, "renewal-cpu.pprof", o.cpuProfile)
		}()
	}
	var st renewalStats
	var wg sync.WaitGroup
	for i, a := range f.agents {
		wg.Go(func() { f.renewAt(a, work[i], &st) })
	}
	wg.Wait()
	samples := sampler.stop()
	if prof != nil {
		if err := <-prof; err != nil {
			return err
		}
	}

	// Every agent that renewed has its streams on a connection with the
	// new certificate.
	_, _, handoverErr := awaitStreams(ctx, n, time.Now().Add(time.Minute), e.metrics)
	handovers := 0
	for _, a := range f.agents {
		handovers += int(a.handovers.Load())
	}

	renewed, late := 0, 0
	var attempts, retries []time.Time
	var successes []time.Time
	refusals := map[string]int{}
	var lastDone time.Time
	mostAttempts := 0
	for _, w := range work {
		if !w.renewed.IsZero() {
			successes = append(successes, w.renewed)
			lastDone = maxTime(lastDone, w.renewed)
			if w.renewed.Before(w.notAfter) {
				renewed++
			} else {
				late++
			}
		}
		attempts = append(attempts, w.attempts...)
		if len(w.attempts) > 1 {
			retries = append(retries, w.attempts[1:]...)
		}
		mostAttempts = max(mostAttempts, len(w.attempts))
		for m, c := range w.refusals {
			refusals[m] += c
		}
	}
	earliestExpiry := slices.MinFunc(work, func(a, b *renewing) int { return a.notAfter.Compare(b.notAfter) }).notAfter

	life := certs[0].Leaf.NotAfter.Sub(certs[0].Leaf.NotBefore)
	fmt.Printf("\nrenewal: %d agents whose client certificates (lifetime %s, renewed when %.0f%% of it is left, with the agent's jitter) are due between %s and %s (%s); relay-server with --max-concurrent-signing %d and the default per-cluster Renew rate\n",
		n, life, ratio*100, first.Format("15:04:05"), last.Format("15:04:05"), secs(last.Sub(first)), o.signingCap)
	if connected.After(first) {
		fmt.Printf("  (the agents finished connecting %s after the first renewal time)\n", secs(connected.Sub(first)))
	}
	fmt.Printf("  renewed before expiry: %d of %d (goal: all): %s; the last at %s, %s after the first was due and %s before the first certificate expired\n",
		renewed, n, verdict(renewed == n), lastDone.Format("15:04:05.0"), secs(lastDone.Sub(first)), secs(earliestExpiry.Sub(lastDone)))
	if late > 0 {
		fmt.Printf("  renewed after expiry: %d\n", late)
	}
	fmt.Printf("  Renew calls: %d (%d retries; most by one agent: %d); refusals by message:\n", len(attempts), len(retries), mostAttempts)
	for m, c := range refusals {
		fmt.Printf("    %6d  %s\n", c, m)
	}
	var firstDone time.Time
	if len(successes) > 0 {
		firstDone = slices.MinFunc(successes, func(a, b time.Time) int { return a.Compare(b) })
	}
	// A read of a busy server's metrics can take a while, which makes a
	// rate over a short window between reads too high or too low.
	fmt.Printf("  certificates signed (relay_certificates_issued_total{call=\"renew\"}): %.0f, %.1f per second from the first to the last, at most %.1f per second over any five seconds; refused for overload: %.0f\n",
		samples.issued, float64(len(successes))/max(lastDone.Sub(firstDone).Seconds(), 1), peakRate(samples.signed, 5*time.Second), samples.overload)
	fmt.Printf("  signing budget: %d calls in flight (goal: never above): the most that held a signing slot at once (relay_signing_in_flight_peak): %.0f: %s\n",
		o.signingCap, samples.peakInFlight, verdict(samples.reads > 0 && samples.peakInFlight <= float64(o.signingCap)))
	fmt.Printf("  the agents' Renew calls open at once, waiting for their handshake included: at most %d\n", st.peakInFlight.Load())
	if len(retries) > 0 {
		peak, mean := spread(retries, 100*time.Millisecond)
		fmt.Printf("  retries after a refusal, in 100 ms buckets from the first to the last: at most %d in one, mean %.1f (ratio %.1f; lockstep would put them in a few buckets)\n",
			peak, mean, float64(peak)/max(mean, 1e-9))
	} else {
		fmt.Printf("  retries after a refusal: none (the budget was never reached)\n")
	}
	fp, fm := spread(attempts, 100*time.Millisecond)
	fmt.Printf("  all Renew calls in 100 ms buckets: at most %d in one, mean %.1f\n", fp, fm)
	fmt.Printf("  streams moved to a connection with the renewed certificate: %d", handovers)
	if handoverErr != nil {
		fmt.Printf(" (%v)", handoverErr)
	}
	fmt.Println()
	return nil
}

// renewAt renews a's certificate as relay-agent's rotator does once it is
// due: obtain, and after a failure wait the rotator's backoff and obtain
// again, until it succeeds or the certificate has expired (when the agent
// would bootstrap again, which this phase does not measure).
func (f *fleet) renewAt(a *simAgent, w *renewing, st *renewalStats) {
	select {
	case <-f.ctx.Done():
		return
	case <-time.After(time.Until(w.due)):
	}
	retry := backoff.New(agent.RotateRetryInitial, agent.RotateRetryLimit, rand.Float64)
	for time.Now().Before(w.notAfter) {
		w.attempts = append(w.attempts, time.Now())
		cert, err := f.renew(a, st)
		if err == nil {
			w.renewed = time.Now()
			a.cert.Store(cert)
			select {
			case a.renewed <- struct{}{}:
			default:
			}
			return
		}
		w.refusals[refusalMessage(err, agentName(a.i))]++
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(retry.Step()):
		}
	}
}

// newKeyAndCSR makes a P-256 key, as relay-agent does for each renewal, and
// a CSR for name: the key in PEM and the CSR.
func newKeyAndCSR(name string) (keyPEM, csr []byte, err error) {
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		return nil, nil, err
	}
	if keyPEM, err = pki.EncodePrivateKey(key); err != nil {
		return nil, nil, err
	}
	if csr, err = pki.NewCSR(key, name); err != nil {
		return nil, nil, err
	}
	return keyPEM, csr, nil
}

// renew is relay-agent's issuer renewing over mutual TLS: a new key and
// CSR, a new connection presenting the current certificate, one Renew call
// with a 30 s deadline.
func (f *fleet) renew(a *simAgent, st *renewalStats) (*tls.Certificate, error) {
	f.renewCalls.Add(1)
	keyPEM, csr, err := newKeyAndCSR(agentName(a.i))
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{RootCAs: f.roots, ServerName: config.DefaultAuthority, Certificates: []tls.Certificate{*a.cert.Load()}, MinVersion: tls.VersionTLS12}
	conn, err := grpc.NewClient(f.targetOf(a), grpc.WithTransportCredentials(grpccreds.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	in := st.inFlight.Add(1)
	for p := st.peakInFlight.Load(); in > p && !st.peakInFlight.CompareAndSwap(p, in); p = st.peakInFlight.Load() {
	}
	resp, err := relayv1.NewRelayClient(conn).Renew(ctx, &relayv1.RenewRequest{Csr: csr})
	st.inFlight.Add(-1)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(resp.GetCertificateChain(), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("relay server returned an unusable certificate: %w", err)
	}
	return &cert, nil
}

// refusalMessage is how a failed Renew of cluster is counted: its status
// code and message, the cluster's name replaced.
func refusalMessage(err error, cluster string) string {
	msg := err.Error()
	if s, ok := status.FromError(err); ok {
		msg = s.Code().String() + ": " + s.Message()
	}
	return strings.ReplaceAll(msg, cluster, "<cluster>")
}

// clusterUIDs returns the UID of each KubernetesCluster, by name.
func (e *environment) clusterUIDs(ctx context.Context) (map[string]string, error) {
	var list meshv1alpha1.KubernetesClusterList
	if err := e.client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("failed to list KubernetesClusters: %w", err)
	}
	uids := make(map[string]string, len(list.Items))
	for _, kc := range list.Items {
		uids[kc.Name] = string(kc.UID)
	}
	return uids, nil
}

// dueCerts signs n client certificates bound to their clusters, as
// relay-server signs them, of lifetime renewalTTL, issued in the past so
// that the earliest renewal time any jitter gives is earliest.
func (e *environment) dueCerts(n int, uids map[string]string, earliest time.Time) ([]tls.Certificate, error) {
	now := time.Now()
	iss, err := pki.NewIssuer(e.signing, pki.Policy{Role: pki.RoleClient, TTL: renewalTTL}, now)
	if err != nil {
		return nil, err
	}
	sign := func(i int, at time.Time) (*tls.Certificate, error) {
		name := agentName(i)
		keyPEM, csr, err := newKeyAndCSR(name)
		if err != nil {
			return nil, err
		}
		issued, err := iss.SignPEM(csr, pki.Identity{DNSNames: []string{name}, ClusterUID: uids[name]}, at)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(issued.CertPEM, keyPEM)
		return &cert, err
	}
	// A certificate issued now is due at some time; issue them all that
	// much earlier than earliest.
	probe, err := sign(0, now)
	if err != nil {
		return nil, err
	}
	due, err := pki.RenewalTime(probe.Leaf, config.DefaultRotationGracePeriodRatio, maxRenewalJitter)
	if err != nil {
		return nil, err
	}
	at := now.Add(earliest.Sub(due))
	certs := make([]tls.Certificate, n)
	for i := range certs {
		c, err := sign(i, at)
		if err != nil {
			return nil, fmt.Errorf("failed to sign the certificate of %s: %w", agentName(i), err)
		}
		certs[i] = *c
	}
	return certs, nil
}

// renewalSampler reads the server's signing metrics while the storm lasts.
type renewalSampler struct {
	done chan struct{}
	out  chan renewalSamples
}

// renewalSamples are what the sampler read: the most signing slots ever
// held at once (relay_signing_in_flight_peak, kept by the server itself, so
// no peak falls between two reads), and the counters at the end.
type renewalSamples struct {
	reads            int
	peakInFlight     float64
	issued, overload float64
	// signed are the issued counter's reads, for its rate.
	signed []countAt
}

// countAt is a counter read at a time.
type countAt struct {
	at time.Time
	n  float64
}

// peakRate returns the highest rate of the counter over any window of at
// least d between two reads.
func peakRate(reads []countAt, d time.Duration) float64 {
	peak := 0.0
	j := 0
	for i := range reads {
		for j < len(reads) && reads[j].at.Sub(reads[i].at) < d {
			j++
		}
		if j == len(reads) {
			break
		}
		peak = max(peak, (reads[j].n-reads[i].n)/reads[j].at.Sub(reads[i].at).Seconds())
	}
	return peak
}

func startRenewalSampler(ctx context.Context, metrics string) *renewalSampler {
	s := &renewalSampler{done: make(chan struct{}), out: make(chan renewalSamples, 1)}
	go func() {
		var r renewalSamples
		read := func() {
			x := scrape(metrics)
			if x == nil {
				return
			}
			r.reads++
			r.peakInFlight = max(r.peakInFlight, x.sum("relay_signing_in_flight_peak", ""))
			r.issued = x.sum("relay_certificates_issued_total", `call="renew"`)
			r.signed = append(r.signed, countAt{at: time.Now(), n: r.issued})
			r.overload = x.sum("relay_certificates_refused_total", `reason="overload"`)
		}
		for {
			read()
			select {
			case <-ctx.Done():
				s.out <- r
				return
			case <-s.done:
				read()
				s.out <- r
				return
			case <-time.After(samplingEvery):
			}
		}
	}()
	return s
}

func (s *renewalSampler) stop() renewalSamples {
	close(s.done)
	return <-s.out
}

// spread buckets ts into windows of length d from the first to the last,
// and returns the fullest bucket's count and the mean count.
func spread(ts []time.Time, d time.Duration) (peak int, mean float64) {
	if len(ts) == 0 {
		return 0, 0
	}
	lo := slices.MinFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	hi := slices.MaxFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	buckets := make([]int, hi.Sub(lo)/d+1)
	for _, t := range ts {
		k := t.Sub(lo) / d
		buckets[k]++
		peak = max(peak, buckets[k])
	}
	return peak, float64(len(ts)) / float64(len(buckets))
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
