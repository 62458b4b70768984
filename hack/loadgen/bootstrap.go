package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// measureIssuance runs pkg/pki's CSR signing as a Go benchmark in this
// process: the speed the bootstrap throughput is compared with.
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

type bootstrapResult struct {
	count     int
	elapsed   time.Duration
	perSecond float64
}

// measureBootstrap runs n bootstraps, each over its own new TLS connection,
// with concurrency in flight. CSRs are made beforehand, so that the figure
// is the server's, not the agents' key generation.
func measureBootstrap(ctx context.Context, e *environment, n, concurrency int) (*bootstrapResult, error) {
	csrs := make([][]byte, n)
	for i := range csrs {
		key, err := pki.GenerateKey(pki.ECDSAP256)
		if err != nil {
			return nil, err
		}
		if csrs[i], err = pki.NewCSR(key, agentName(i%max(1, n))); err != nil {
			return nil, err
		}
	}
	tc := &tls.Config{RootCAs: e.roots, ServerName: config.DefaultAuthority, MinVersion: tls.VersionTLS12}
	start := time.Now()
	err := forEach(ctx, n, concurrency, func(i int) error {
		return bootstrapOnce(ctx, e.addr, tc, agentName(i), e.token, csrs[i])
	})
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("bootstrap failed: %w", err)
	}
	return &bootstrapResult{count: n, elapsed: elapsed, perSecond: float64(n) / elapsed.Seconds()}, nil
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
