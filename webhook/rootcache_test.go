package webhook

import (
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

func TestTheRootCacheParsesEachCACertOnceAndAgainWhenItChanges(t *testing.T) {
	root := func(cn string) []byte {
		t.Helper()
		ca, err := pki.NewRootCA(pki.Options{CommonName: cn, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return ca.CAPEM()
	}
	first, second := root("first"), root("second")
	c := &rootCache{}
	a, err := c.decode(first)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.decode(append([]byte{}, first...))
	if &a[0] != &b[0] {
		t.Error("the same ca.crt was parsed again")
	}
	if cap(b) != len(b) {
		t.Errorf("the shared certificates have room to append (%d of %d): an append would write into the cache", len(b), cap(b))
	}
	s, _ := c.decode(second)
	if len(s) != 1 || s[0].Subject.CommonName != "second" {
		t.Errorf("a new ca.crt gave %v, want the certificate of the new bytes", s)
	}
	if _, err := c.decode([]byte("not PEM")); err == nil {
		t.Error("bytes that are no certificate decoded")
	}
	if s, _ := c.decode(second); len(s) != 1 || s[0].Subject.CommonName != "second" {
		t.Errorf("a failed decode replaced the cached roots: %v", s)
	}
	var none *rootCache
	if n, err := none.decode(first); err != nil || n[0].Subject.CommonName != "first" {
		t.Errorf("a nil cache: %v, %v", n, err)
	}
}
