package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/procstat"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// measureIssuance runs pkg/pki's CSR signing as a Go benchmark in this
// process: the cryptographic part of a bootstrap beside the handshake.
func measureIssuance() (time.Duration, error) {
	root, err := pki.NewRootCA(pki.Options{CommonName: "bench-root", TTL: time.Hour})
	if err != nil {
		return 0, err
	}
	inter, err := root.NewIntermediateCA(pki.Options{CommonName: "bench-signing", TTL: time.Hour})
	if err != nil {
		return 0, err
	}
	iss, err := pki.NewIssuer(inter, pki.Policy{Role: pki.RoleClient, TTL: time.Hour}, time.Now())
	if err != nil {
		return 0, err
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, "agent-0")
	var signErr error
	r := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			if _, err := iss.SignPEM(csr, pki.Identity{DNSNames: []string{"agent-0"}}, time.Now()); err != nil {
				signErr = err
			}
		}
	})
	return time.Duration(r.NsPerOp()), signErr
}

// bootstrapTarget is a server the bootstrap driver measures: its process
// and the client's half of one bootstrap against it.
type bootstrapTarget struct {
	name string
	pid  int
	addr string
	once func(i int) error

	cpu     time.Duration
	loadCPU time.Duration // of cpu, what the process used until the last answer
	elapsed time.Duration
	count   int
	rounds  []time.Duration // CPU per bootstrap in each round
	tail    time.Duration   // how long the windows went on after the last answer
	kex     string
	// writes counts the writes to the bootstrapped clusters'
	// KubernetesClusters over the windows (relay-server only).
	writes int
}

func (t *bootstrapTarget) perBootstrap() time.Duration { return t.cpu / time.Duration(max(t.count, 1)) }

type bootstrapResult struct {
	floor, server *bootstrapTarget
	idle          time.Duration // relay-server's CPU per second, idle
	rounds        int
}

// idleWindow is how long the server's idle CPU is read over.
const idleWindow = 10 * time.Second

// A process is quiet after quietSeconds one-second samples in a row, each
// with at most quietCPU beside its idle rate; a relay-server with many
// clusters spends its idle CPU in bursts (a sweep every few seconds), which
// a run of samples rides over.
const (
	quietSeconds = 3
	quietCPU     = 10 * time.Millisecond
	maxQuietWait = 5 * time.Minute
)

// quiesce waits until the process pid is quiet, and returns how long it
// waited: each timed window goes on after its last bootstrap answered until
// then, so that the work the bootstraps left behind (status writes at the
// status client's rate limit, Events, the watch events they cause) is
// counted in it. A process still busy after maxQuietWait is reported, not
// waited for.
func quiesce(ctx context.Context, pid int, idle time.Duration) error {
	deadline := time.Now().Add(maxQuietWait)
	last, err := procstat.ProcessCPU(pid)
	if err != nil {
		return err
	}
	for quiet := 0; quiet < quietSeconds; {
		if time.Now().After(deadline) {
			fmt.Printf("  (process %d still busy %s after the load: the window ends anyway)\n", pid, maxQuietWait)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		now, err := procstat.ProcessCPU(pid)
		if err != nil {
			return err
		}
		if now-last <= idle+quietCPU {
			quiet++
		} else {
			quiet = 0
		}
		last = now
	}
	return nil
}

// measureBootstrap runs n bootstraps against relay-server and n against the
// floor, in rounds that alternate which goes first, each bootstrap over its
// own new TLS connection from the same client configuration, with
// concurrency in flight. Each window reads the CPU of the target's process
// alone. CSRs are made beforehand, so that the figure is the server's, not
// the agents' key generation.
func measureBootstrap(ctx context.Context, e *environment, floor *floorProcess, n, rounds, concurrency int, profile time.Duration) (*bootstrapResult, error) {
	csrs := make([][]byte, n)
	for i := range csrs {
		key, err := pki.GenerateKey(pki.ECDSAP256)
		if err != nil {
			return nil, err
		}
		if csrs[i], err = pki.NewCSR(key, agentName(i)); err != nil {
			return nil, err
		}
	}
	serverPID, err := procstat.PidOf("relay-server", e.addr)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{RootCAs: e.roots, ServerName: config.DefaultAuthority, MinVersion: tls.VersionTLS12}
	// gRPC's credentials offer h2 by ALPN; the floor's client does too.
	floorTC := tc.Clone()
	floorTC.NextProtos = []string{"h2"}
	server := &bootstrapTarget{name: "relay-server", pid: serverPID, addr: e.addr, once: func(i int) error {
		return bootstrapOnce(ctx, e.addr, tc, agentName(i), e.token, csrs[i])
	}}
	fl := &bootstrapTarget{name: "floor", pid: floor.pid(), addr: floor.addr, once: func(i int) error {
		return floorBootstrap(floor.addr, floorTC, agentName(i), e.token, csrs[i])
	}}
	for _, t := range []*bootstrapTarget{server, fl} {
		if t.kex, err = keyExchange(t.addr, floorTC); err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	res := &bootstrapResult{floor: fl, server: server, rounds: rounds}
	// The registrations leave the server writing status for a while:
	// measure from when it is quiet.
	if err := quiesce(ctx, serverPID, 0); err != nil {
		return nil, err
	}
	idle0, err := procstat.ProcessCPU(serverPID)
	if err != nil {
		return nil, err
	}
	var idleProfile <-chan error
	if profile > 0 {
		idleProfile = e.cpuProfile(ctx, "idle-cpu.pprof", idleWindow)
	}
	time.Sleep(idleWindow)
	idle1, _ := procstat.ProcessCPU(serverPID)
	res.idle = (idle1 - idle0) * time.Second / idleWindow
	if idleProfile != nil {
		if err := <-idleProfile; err != nil {
			return nil, err
		}
	}

	per := n / rounds
	for r := range rounds {
		order := []*bootstrapTarget{fl, server}
		if r%2 == 1 {
			order = []*bootstrapTarget{server, fl}
		}
		for _, t := range order {
			first := r * per
			cpu0, err := procstat.ProcessCPU(t.pid)
			if err != nil {
				return nil, err
			}
			var prof <-chan error
			if profile > 0 && r == 0 && t == server {
				prof = e.cpuProfile(ctx, "bootstrap-cpu.pprof", profile)
			}
			var writes func() int
			if t == server {
				names := map[string]bool{}
				for i := range per {
					names[agentName(first+i)] = true
				}
				if writes, err = e.countWrites(ctx, names); err != nil {
					return nil, err
				}
			}
			start := time.Now()
			err = forEach(ctx, per, concurrency, func(i int) error { return t.once(first + i) })
			elapsed := time.Since(start)
			if err != nil {
				return nil, fmt.Errorf("%s bootstrap failed: %w", t.name, err)
			}
			answered, err := procstat.ProcessCPU(t.pid)
			if err != nil {
				return nil, err
			}
			t.loadCPU += answered - cpu0
			tail := time.Now()
			if err := quiesce(ctx, t.pid, res.idle); err != nil {
				return nil, err
			}
			t.tail += time.Since(tail)
			cpu1, err := procstat.ProcessCPU(t.pid)
			if err != nil {
				return nil, err
			}
			t.cpu += cpu1 - cpu0
			t.elapsed += elapsed
			t.count += per
			if writes != nil {
				t.writes += writes()
			}
			t.rounds = append(t.rounds, (cpu1-cpu0)/time.Duration(per))
			if prof != nil {
				if err := <-prof; err != nil {
					return nil, err
				}
			}
		}
	}
	return res, nil
}

// print reports the figures of a bootstrap measurement.
func (r *bootstrapResult) print(issuance time.Duration) {
	s, f := r.server, r.floor
	fmt.Printf("\nbootstrap: %d against relay-server and %d against the floor, in %d rounds alternating, same client, each a new TLS connection\n",
		s.count, f.count, r.rounds)
	fmt.Printf("  key exchange: relay-server %s, floor %s\n", s.kex, f.kex)
	fmt.Printf("  relay-server idle: %s CPU per second\n", r.idle.Round(100*time.Microsecond))
	for _, t := range []*bootstrapTarget{f, s} {
		rounds := make([]string, len(t.rounds))
		for i, c := range t.rounds {
			rounds[i] = fmt.Sprintf("%.3f", ms(c))
		}
		fmt.Printf("  %-13s %.3f ms CPU per bootstrap (its process's CPU from /proc/%d/stat over %s of load and %s until quiet; rounds %s ms); %.0f bootstraps/s\n",
			t.name+":", ms(t.perBootstrap()), t.pid, t.elapsed.Round(time.Millisecond), t.tail.Round(time.Millisecond), strings.Join(rounds, " "), float64(t.count)/t.elapsed.Seconds())
	}
	fmt.Printf("  of relay-server's, until the last answer: %.3f ms per bootstrap (ratio to the floor's %.2f); after it (status writes, Events, the watch events they cause): %.3f ms\n",
		ms(s.loadCPU/time.Duration(s.count)), float64(s.loadCPU)/float64(f.cpu/time.Duration(f.count))/float64(s.count), ms((s.cpu-s.loadCPU)/time.Duration(s.count)))
	excess := s.cpu - time.Duration(float64(r.idle)*(s.elapsed+s.tail).Seconds())
	fmt.Printf("  relay-server less its idle CPU over the same windows: %.3f ms per bootstrap\n", ms(excess/time.Duration(s.count)))
	fmt.Printf("  writes to each bootstrapped cluster's KubernetesCluster over the windows: %.2f (the token spent, the replica's status entry, the leader's status fields)\n",
		float64(s.writes)/float64(max(s.count, 1)))
	fmt.Printf("  ratio relay-server/floor: %.2f (goal <= 1.25)\n", float64(s.cpu)/float64(s.count)/(float64(f.cpu)/float64(f.count)))
	fmt.Printf("  of which pkg/pki signing (in this process, one core): %.3f ms per certificate\n", ms(issuance))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// countWrites counts, from now until the returned function is called, the
// writes to the KubernetesClusters of names, as a watch sees them.
func (e *environment) countWrites(ctx context.Context, names map[string]bool) (func() int, error) {
	var list meshv1alpha1.KubernetesClusterList
	w, err := e.client.Watch(ctx, &list, client.InNamespace(namespace))
	if err != nil {
		return nil, fmt.Errorf("failed to watch KubernetesClusters: %w", err)
	}
	n := make(chan int, 1)
	go func() {
		count := 0
		for ev := range w.ResultChan() {
			if kc, ok := ev.Object.(*meshv1alpha1.KubernetesCluster); ok && ev.Type == watch.Modified && names[kc.Name] {
				count++
			}
		}
		n <- count
	}()
	return func() int {
		w.Stop()
		return <-n
	}, nil
}

// keyExchange returns the TLS version and key exchange a full handshake with
// addr negotiates.
func keyExchange(addr string, tc *tls.Config) (string, error) {
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return fmt.Sprintf("%s %s", tls.VersionName(st.Version), st.CurveID), nil
}

func bootstrapOnce(ctx context.Context, addr string, tc *tls.Config, cluster, token string, csr []byte) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(grpccreds.NewTLS(tc)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = relayv1.NewRelayClient(conn).Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: cluster, Token: token, Csr: csr})
	return err
}
