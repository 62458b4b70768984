package agent

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
)

// recordedLog keeps what was logged at error level, and counts the rest.
type recordedLog struct {
	mu     sync.Mutex
	errors []string
	infos  int
}

func (l *recordedLog) Init(logr.RuntimeInfo)          {}
func (l *recordedLog) Enabled(int) bool               { return true }
func (l *recordedLog) WithName(string) logr.LogSink   { return l }
func (l *recordedLog) WithValues(...any) logr.LogSink { return l }
func (l *recordedLog) Info(int, string, ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.infos++
}
func (l *recordedLog) Error(err error, msg string, _ ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errors = append(l.errors, msg+": "+err.Error())
}
func (l *recordedLog) errorLines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errors...)
}

func TestARefusedBootstrapIsLoggedAsAnErrorRetriedWithBackoffAndRetriedAtOnceWithAFreshToken(t *testing.T) {
	const fix = "this bootstrap token was already used for cluster cluster-1: issue a fresh one with relayctl register cluster-1"
	for _, tc := range []struct {
		name    string
		code    codes.Code
		asError bool
	}{
		{"an Unauthenticated refusal is an error naming the server's fix", codes.Unauthenticated, true},
		{"a PermissionDenied refusal is an error naming the server's fix", codes.PermissionDenied, true},
		{"an unreachable server is not an error: it is retried quietly", codes.Unavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRotatorRig(t, material{clientOK: &errMissing{}, token: []byte("spent"), tokenHash: bootstraptoken.Hash("spent")})
			logs := &recordedLog{}
			r.opts.Log = logr.New(logs)
			refused := fmt.Errorf("relay server refused: %w", status.Error(tc.code, fix))
			r.renewer.failNext(refused, refused, refused)
			r.start(t)
			for i, want := range []time.Duration{time.Second, 2 * time.Second} {
				if got := r.clock.fire(t); got != want {
					t.Fatalf("retry %d after %s, want %s: refusals back off", i, got, want)
				}
			}
			if got := r.clock.next(t); got != 4*time.Second {
				t.Fatalf("after three refusals the rotator waits %s, want 4s", got)
			}
			errs := logs.errorLines()
			if !tc.asError {
				if len(errs) != 0 {
					t.Errorf("logged at error level: %q", errs)
				}
				return
			}
			if len(errs) != 3 {
				t.Fatalf("%d error lines, want one per refusal (3): %q", len(errs), errs)
			}
			for _, e := range errs {
				if !strings.Contains(e, "relayctl register cluster-1") {
					t.Errorf("error line %q does not carry the server's fix", e)
				}
			}

			// relayctl register writes a fresh token: the watcher's change
			// wakes the rotator, which bootstraps without waiting out the
			// backoff.
			r.secrets.set(material{clientOK: &errMissing{}, token: []byte("fresh"), tokenHash: bootstraptoken.Hash("fresh")})
			r.changed.notify()
			if got := r.clock.next(t); got != 0 {
				t.Fatalf("after the fresh token the rotator waits %s, want 0 (a look at the new certificate)", got)
			}
			calls := r.renewer.obtained()
			if len(calls) != 4 || !calls[3].Equal(t0.Add(3*time.Second)) {
				t.Fatalf("obtain called at %v, want a fourth call at once, at %v", calls, t0.Add(3*time.Second))
			}
			r.renewer.mu.Lock()
			given := string(r.renewer.given[3].token)
			r.renewer.mu.Unlock()
			if given != "fresh" {
				t.Errorf("the fourth attempt used token %q, want the fresh one", given)
			}
		})
	}
}

func TestAFreshTokenReplacesAValidCertificateAtOnceAndARefusedOneDoesNotBlockRenewals(t *testing.T) {
	valid := material{client: leaf(1, t0, time.Hour), token: []byte("fresh"), tokenHash: bootstraptoken.Hash("fresh"), freshToken: true}
	t.Run("a fresh token is used at once, although the certificate is valid", func(t *testing.T) {
		r := newRotatorRig(t, valid)
		r.start(t)
		if got := r.clock.next(t); got != 0 {
			t.Fatalf("the rotator waits %s, want 0: it obtained a certificate with the fresh token", got)
		}
		if calls := r.renewer.obtained(); len(calls) != 1 || !calls[0].Equal(t0) {
			t.Fatalf("obtain called at %v, want once at once", calls)
		}
		r.renewer.mu.Lock()
		fresh := r.renewer.given[0].freshToken
		r.renewer.mu.Unlock()
		if !fresh {
			t.Error("the issuer was not told the token is fresh")
		}
	})
	refused := fmt.Errorf("relay server refused: %w", status.Error(codes.Unauthenticated, "the bootstrap token of cluster cluster-1 expired unused"))
	t.Run("a fresh token refused as often as it may be tried is not tried again while the certificate is valid, and renewal goes on", func(t *testing.T) {
		r := newRotatorRig(t, valid)
		logs := &recordedLog{}
		r.opts.Log = logr.New(logs)
		r.renewer.failNext(refused, refused, refused)
		r.start(t)
		var backoffs []time.Duration
		for range freshTokenTries {
			backoffs = append(backoffs, r.clock.fire(t))
		}
		if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}; !equalDurations(backoffs, want) {
			t.Fatalf("after the refusals the rotator waits %v, want the backoff %v", backoffs, want)
		}
		// Due at 30 of the certificate's 60 minutes: looked at every ten.
		var waits []time.Duration
		for range 3 {
			waits = append(waits, r.clock.fire(t))
		}
		if want := []time.Duration{10 * time.Minute, 10 * time.Minute, 10*time.Minute - 7*time.Second}; !equalDurations(waits, want) {
			t.Fatalf("waits %v, want %v: the schedule, not retries of the refused token", waits, want)
		}
		if got := r.clock.next(t); got != 0 {
			t.Fatalf("after the renewal the rotator waits %s, want 0", got)
		}
		calls := r.renewer.obtained()
		if len(calls) != freshTokenTries+1 {
			t.Fatalf("obtain called %d times (%v), want %d: the refused fresh token, then the renewal", len(calls), calls, freshTokenTries+1)
		}
		r.renewer.mu.Lock()
		renewal := r.renewer.given[freshTokenTries]
		r.renewer.mu.Unlock()
		if renewal.freshToken {
			t.Error("the renewal was asked to use the refused token again")
		}
		if errs := logs.errorLines(); len(errs) != freshTokenTries || !strings.Contains(errs[0], "expired unused") {
			t.Errorf("error lines %q, want the %d refusals", errs, freshTokenTries)
		}
	})
	t.Run("a fresh token refused once, by a server whose cache is behind the registration, is tried again and used", func(t *testing.T) {
		r := newRotatorRig(t, valid)
		r.renewer.failNext(refused)
		r.start(t)
		if got := r.clock.fire(t); got != time.Second {
			t.Fatalf("after the refusal the rotator waits %s, want the first backoff, 1s", got)
		}
		if got := r.clock.next(t); got != 0 {
			t.Fatalf("after the second try the rotator waits %s, want 0: it obtained a certificate", got)
		}
		r.renewer.mu.Lock()
		defer r.renewer.mu.Unlock()
		if len(r.renewer.given) != 2 || !r.renewer.given[1].freshToken {
			t.Fatalf("obtain given %d materials, the second fresh: %v; want the fresh token tried again", len(r.renewer.given), len(r.renewer.given) == 2 && r.renewer.given[1].freshToken)
		}
	})
}
