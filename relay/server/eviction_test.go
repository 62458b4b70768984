package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"
)

func TestConnectionsEvictWhereEndsOnlyTheStreamsItJudges(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	cert := func(serial int64, notAfter time.Time) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), NotAfter: notAfter}
	}
	c := newConnections()
	closed := 0
	revoked := c.open("a", pushStream, func() { closed++ }, cert(1, now.Add(time.Hour)))
	kept := c.open("a", pullStream, nil, cert(2, now.Add(time.Hour)))
	insecure := c.open("a", pullStream, nil, nil)
	other := c.open("b", pullStream, nil, cert(1, now.Add(time.Hour)))

	refusal := errors.New("revoked")
	var told []string
	c.evictWhere("", func(cluster string, s *stream) error {
		told = append(told, fmt.Sprintf("%s/%d", cluster, s.cert.SerialNumber.Int64()))
		if cluster == "a" && s.cert.SerialNumber.Int64() == 1 {
			return refusal
		}
		return nil
	})
	slices.Sort(told)
	if want := []string{"a/1", "a/2", "b/1"}; !slices.Equal(told, want) {
		t.Errorf("evictWhere judged streams %v, want %v (every stream with a certificate, none without)", told, want)
	}
	if !revoked.wasDropped() || revoked.reason != refusal || closed != 1 {
		t.Errorf("the refused stream: ended %v with %v, %d connections closed; want ended with the refusal and its connection closed", revoked.wasDropped(), revoked.reason, closed)
	}
	if kept.wasDropped() || insecure.wasDropped() || other.wasDropped() {
		t.Error("evictWhere ended a stream it admits, or one without a certificate")
	}

	// Scoped to one cluster, a walk judges that cluster's streams only.
	told = nil
	c.evictWhere("b", func(cluster string, s *stream) error {
		told = append(told, fmt.Sprintf("%s/%d", cluster, s.cert.SerialNumber.Int64()))
		return nil
	})
	if want := []string{"b/1"}; !slices.Equal(told, want) {
		t.Errorf("a walk of cluster b judged %v, want %v", told, want)
	}

	told = nil
	c.evictWhere("", func(cluster string, s *stream) error {
		told = append(told, fmt.Sprintf("%s/%d", cluster, s.cert.SerialNumber.Int64()))
		return refusal
	})
	slices.Sort(told)
	if want := []string{"a/2", "b/1"}; !slices.Equal(told, want) || closed != 1 {
		t.Errorf("a second eviction judged %v (closed %d connections), want only the streams not ended yet %v", told, closed, want)
	}
}

// BenchmarkExpireSweep is one pass of the expiry sweep over 20,000
// open streams (10,000 agents with a push and a pull stream each), none
// expired: what the server spends, holding the connections lock, four
// times a second.
func BenchmarkExpireSweep(b *testing.B) {
	now := time.Now()
	c := newConnections()
	for i := range 10_000 {
		cluster := fmt.Sprintf("cluster-%d", i)
		x := &x509.Certificate{SerialNumber: big.NewInt(int64(i)), NotAfter: now.Add(time.Hour)}
		c.open(cluster, pushStream, nil, x)
		c.open(cluster, pullStream, nil, x)
	}
	b.ResetTimer()
	for b.Loop() {
		c.evictWhere("", func(cluster string, s *stream) error {
			if err := checkNotExpired(cluster, s.cert, now); err != nil {
				b.Fatal("ended streams")
			}
			return nil
		})
	}
}
