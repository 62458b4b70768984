package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"
)

func TestConnectionsEvictAndExpireEndOnlyTheStreamsTheyJudge(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	cert := func(serial int64, notAfter time.Time) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), NotAfter: notAfter}
	}
	c := newConnections()
	closed := 0
	revoked := c.open("a", pushStream, func() { closed++ }, cert(1, now.Add(time.Hour)))
	kept := c.open("a", pullStream, nil, cert(2, now.Add(time.Hour)))
	insecure := c.open("a", pullStream, nil, nil)
	expired := c.open("b", pullStream, nil, cert(3, now))
	later := c.open("b", pullStream, nil, cert(4, now.Add(time.Second)))

	refusal := errors.New("revoked")
	if n := c.evict("a", func(x *x509.Certificate) error {
		if x.SerialNumber.Int64() == 1 {
			return refusal
		}
		return nil
	}); n != 1 || closed != 1 {
		t.Errorf("evict ended %d streams and closed %d connections, want 1 and 1", n, closed)
	}
	if !revoked.wasDropped() || revoked.reason != refusal {
		t.Errorf("the refused stream: ended %v with %v, want ended with the refusal", revoked.wasDropped(), revoked.reason)
	}
	if kept.wasDropped() || insecure.wasDropped() {
		t.Error("evict ended a stream it admits, or one without a certificate")
	}
	if n := c.evict("a", func(*x509.Certificate) error { return refusal }); n != 1 || closed != 1 {
		t.Errorf("a second eviction ended %d streams (closed %d connections), want only the one not ended yet", n, closed)
	}

	var told []string
	ended := c.expire(now, func(cluster string, x *x509.Certificate) error {
		told = append(told, fmt.Sprintf("%s/%d", cluster, x.SerialNumber.Int64()))
		return errors.New("expired")
	})
	if len(ended) != 1 || ended[0] != "b" || len(told) != 1 || told[0] != "b/3" {
		t.Errorf("expire at NotAfter ended clusters %v, streams %v; want only b/3", ended, told)
	}
	if !expired.wasDropped() || expired.reason == nil || later.wasDropped() || insecure.wasDropped() {
		t.Error("expire ended the wrong streams")
	}
	if again := c.expire(now, func(string, *x509.Certificate) error { return errors.New("expired") }); len(again) != 0 {
		t.Errorf("an ended stream not closed yet was ended again: %v", again)
	}
}

// BenchmarkExpireSweep is one pass of the expiry sweep over 20,000 open
// streams (10,000 agents with a push and a pull stream each), none expired:
// what the server spends, holding the connections lock, four times a
// second.
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
		if ended := c.expire(now, func(string, *x509.Certificate) error { return nil }); len(ended) != 0 {
			b.Fatal("ended streams")
		}
	}
}
