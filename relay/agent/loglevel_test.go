package agent

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/pkg/config"
)

// logLine is one line a recordingSink took: an error's, or an info line's
// at its V level, with its key/value pairs.
type logLine struct {
	isError bool
	level   int
	msg     string
	kv      []any
}

// recordingSink is a logr.LogSink that keeps each line's level, message
// and key/value pairs.
type recordingSink struct {
	mu    *sync.Mutex
	lines *[]logLine
}

func newRecordingLog() (logr.Logger, func() []logLine) {
	s := recordingSink{mu: &sync.Mutex{}, lines: &[]logLine{}}
	return logr.New(s), func() []logLine {
		s.mu.Lock()
		defer s.mu.Unlock()
		return append([]logLine(nil), *s.lines...)
	}
}

func (recordingSink) Init(logr.RuntimeInfo)  {}
func (recordingSink) Enabled(level int) bool { return true }
func (s recordingSink) Info(level int, msg string, kv ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.lines = append(*s.lines, logLine{level: level, msg: msg, kv: kv})
}
func (s recordingSink) Error(_ error, msg string, _ ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.lines = append(*s.lines, logLine{isError: true, msg: msg})
}
func (s recordingSink) WithValues(...any) logr.LogSink { return s }
func (s recordingSink) WithName(string) logr.LogSink   { return s }

func TestRotatorLogsAFailedRotationAsAnErrorAndAWaitAsInfo(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		wantError bool
		wantMsg   string
	}{
		{"a failure that is not the server's unavailability is an error at once",
			errors.New("failed to read secret gloo-mesh/relay-root-tls-secret: connection refused"), true, "failed to obtain a client certificate"},
		{"a client secret that cannot be written is an error",
			errors.New("failed to write secret gloo-mesh/relay-client-tls-secret: forbidden"), true, "failed to obtain a client certificate"},
		{"a refusal by the server is an error",
			fmt.Errorf("relay server refused: %w", status.Error(codes.PermissionDenied, "cluster-1 is not registered")), true, "relay server refused to issue a client certificate"},
		{"secrets not copied yet are a wait, logged as info",
			fmt.Errorf("%w: secret gloo-mesh/relay-root-tls-secret with ca.crt is missing", errWaitingForTrust), false, "cannot obtain a client certificate yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRotatorRig(t, material{clientOK: &errMissing{}})
			log, lines := newRecordingLog()
			r.opts.Log = log
			r.renewer.failNext(tc.err)
			r.start(t)
			r.clock.next(t) // the retry's backoff: the failure is logged by now
			var got []logLine
			for _, l := range lines() {
				if l.msg == tc.wantMsg {
					got = append(got, l)
				}
			}
			if len(got) != 1 || got[0].isError != tc.wantError {
				t.Errorf("logged %+v, want one %q line with error level %v", lines(), tc.wantMsg, tc.wantError)
			}
		})
	}
}

func TestIssuerWithoutTheSecretsItNeedsSaysItIsWaiting(t *testing.T) {
	cfg := config.DefaultAgent()
	cfg.Cluster = "cluster-1"
	iss := newIssuer(issuerOptions{Config: &cfg, Secrets: newSecretStore(&cfg)})
	for name, m := range map[string]*material{
		"no root":                        {},
		"a root but no token nor client": {roots: []*x509.Certificate{{}}, clientOK: &errMissing{}},
	} {
		_, err := iss.obtain(t.Context(), m)
		if !errors.Is(err, errWaitingForTrust) {
			t.Errorf("%s: obtain = %v, want an error that is errWaitingForTrust (logged as info, not as a failure)", name, err)
		}
	}
}

func TestAnUnavailableServerIsRetriedQuietlyAndAnErrorOnceItLasts(t *testing.T) {
	r := newRotatorRig(t, material{clientOK: &errMissing{}})
	log, lines := newRecordingLog()
	r.opts.Log = log
	unavailable := fmt.Errorf("failed to renew: %w", status.Error(codes.Unavailable, "connection refused"))
	fails := make([]error, quietUnavailable+1)
	for i := range fails {
		fails[i] = unavailable
	}
	r.renewer.failNext(fails...)
	r.start(t)
	for range quietUnavailable {
		r.clock.fire(t)
	}
	var quiet, loud int
	for _, l := range lines() {
		switch {
		case l.msg == "relay server unavailable; retrying" && !l.isError:
			quiet++
		case l.msg == "failed to obtain a client certificate" && l.isError:
			loud++
		}
	}
	if quiet != quietUnavailable-1 || loud < 1 {
		t.Errorf("%d quiet retries and %d errors, want %d quiet then errors: %+v", quiet, loud, quietUnavailable-1, lines())
	}
}
