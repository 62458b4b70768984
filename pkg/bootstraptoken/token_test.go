package bootstraptoken

import (
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

func TestATokenIsRecordedOnlyAsItsHashAndMatchesOnlyItself(t *testing.T) {
	tok, err := New()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := New()
	if len(tok) < Bytes || tok == other {
		t.Fatalf("tokens %q and %q: want two different printable tokens of at least %d characters", tok, other, Bytes)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ann := map[string]string{}
	Issue(tok, now, time.Hour).Write(ann)
	for k, v := range ann {
		if strings.Contains(v, tok) {
			t.Errorf("annotation %s holds the token itself", k)
		}
	}
	if ann[v1alpha1.BootstrapTokenExpiresAnnotation] != "2026-01-02T04:04:05Z" {
		t.Errorf("expiry annotation %q", ann[v1alpha1.BootstrapTokenExpiresAnnotation])
	}
	r, err := Read(ann)
	if err != nil || r == nil {
		t.Fatalf("Read = %v, %v", r, err)
	}
	for _, c := range []struct {
		name  string
		token string
		want  bool
	}{
		{"the issued token matches", tok, true},
		{"another token does not match", other, false},
		{"the hash itself does not match", r.Hash, false},
		{"an empty token does not match", "", false},
	} {
		if got := r.Matches(c.token); got != c.want {
			t.Errorf("%s: Matches = %v", c.name, got)
		}
	}
	if r.Expired(now.Add(59*time.Minute)) || !r.Expired(now.Add(time.Hour)) {
		t.Error("a one-hour token must be valid before the hour and expired at it")
	}
	Consume(ann, now)
	if r, _ := Read(ann); r != nil {
		t.Errorf("record still present after Consume: %v", r)
	}
	if at, ok := Bootstrapped(ann); !ok || !at.Equal(now) {
		t.Errorf("Bootstrapped = %v, %v; want %v", at, ok, now)
	}
}

func TestAMalformedRecordIsAnErrorNamingTheAnnotation(t *testing.T) {
	for name, ann := range map[string]map[string]string{
		"an uppercase hash": {v1alpha1.BootstrapTokenHashAnnotation: strings.ToUpper(Hash("x")), v1alpha1.BootstrapTokenExpiresAnnotation: "2026-01-01T00:00:00Z"},
		"a short hash":      {v1alpha1.BootstrapTokenHashAnnotation: "abcd", v1alpha1.BootstrapTokenExpiresAnnotation: "2026-01-01T00:00:00Z"},
		"no expiry":         {v1alpha1.BootstrapTokenHashAnnotation: Hash("x")},
	} {
		if _, err := Read(ann); err == nil || !strings.Contains(err.Error(), "meshrelay.dev/bootstrap-token-") {
			t.Errorf("%s: Read error %v, want one naming the annotation", name, err)
		}
	}
	if r, err := Read(nil); r != nil || err != nil {
		t.Errorf("no annotations: Read = %v, %v; want nil, nil", r, err)
	}
}

func TestTokenLifetimeBounds(t *testing.T) {
	for ttl, ok := range map[time.Duration]bool{59 * time.Second: false, time.Minute: true, DefaultTTL: true, MaxTTL: true, MaxTTL + time.Second: false} {
		if err := CheckTTL(ttl); (err == nil) != ok {
			t.Errorf("CheckTTL(%s) = %v", ttl, err)
		}
	}
}
