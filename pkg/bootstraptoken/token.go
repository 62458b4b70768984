// Package bootstraptoken defines a workload cluster's own bootstrap token in
// one place: how one is made, how the management cluster records it (a hash
// and an expiry in annotations of the cluster's KubernetesCluster, never the
// token itself), and how a presented token is judged against that record.
// relayctl register writes records, relay-server consumes them and relayctl
// check reports them; none of them re-derive the format.
package bootstraptoken

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// Bytes is the entropy of a token. With 256 random bits a plain SHA-256 of
// the token is safe to store: it cannot be reversed by guessing.
const Bytes = 32

// Lifetimes a token may be issued with.
const (
	DefaultTTL = time.Hour
	MinTTL     = time.Minute
	MaxTTL     = 7 * 24 * time.Hour
)

// New returns a fresh random token, printable (unpadded base64url of Bytes
// random bytes).
func New() (string, error) {
	raw := make([]byte, Bytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("failed to generate a bootstrap token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(raw), nil
}

// Hash returns the lowercase hex SHA-256 of token, as it is recorded.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CheckTTL returns an error unless ttl is between MinTTL and MaxTTL.
func CheckTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL {
		return fmt.Errorf("bootstrap token lifetime %s is out of range: use between %s and %s (7 days)", ttl, MinTTL, MaxTTL)
	}
	return nil
}

// Record is an issued, unused token as the management cluster keeps it.
type Record struct {
	// Hash is Hash of the token.
	Hash    string
	Expires time.Time
}

// Issue returns a record of token that expires ttl after now.
func Issue(token string, now time.Time, ttl time.Duration) Record {
	return Record{Hash: Hash(token), Expires: now.Add(ttl).UTC().Truncate(time.Second)}
}

// Read returns the record in a KubernetesCluster's annotations, nil when it
// holds none, or an error naming the annotation that does not parse.
func Read(annotations map[string]string) (*Record, error) {
	h, ok := annotations[v1alpha1.BootstrapTokenHashAnnotation]
	if !ok {
		return nil, nil
	}
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != h {
		return nil, fmt.Errorf("annotation %s is not a lowercase hex SHA-256: issue a fresh token with relayctl register", v1alpha1.BootstrapTokenHashAnnotation)
	}
	exp, err := time.Parse(time.RFC3339, annotations[v1alpha1.BootstrapTokenExpiresAnnotation])
	if err != nil {
		return nil, fmt.Errorf("annotation %s is not an RFC 3339 time: issue a fresh token with relayctl register", v1alpha1.BootstrapTokenExpiresAnnotation)
	}
	return &Record{Hash: h, Expires: exp}, nil
}

// Write puts r into annotations, replacing any earlier record.
func (r Record) Write(annotations map[string]string) {
	annotations[v1alpha1.BootstrapTokenHashAnnotation] = r.Hash
	annotations[v1alpha1.BootstrapTokenExpiresAnnotation] = r.Expires.UTC().Format(time.RFC3339)
}

// Matches reports, in constant time, whether token is the recorded one.
func (r *Record) Matches(token string) bool {
	if r == nil {
		return false
	}
	want, err := hex.DecodeString(r.Hash)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

// Expired reports whether the token may no longer be used at now.
func (r *Record) Expired(now time.Time) bool { return !now.Before(r.Expires) }

// Consume removes the record from annotations and marks the cluster
// bootstrapped at now.
func Consume(annotations map[string]string, now time.Time) {
	delete(annotations, v1alpha1.BootstrapTokenHashAnnotation)
	delete(annotations, v1alpha1.BootstrapTokenExpiresAnnotation)
	MarkBootstrapped(annotations, now)
}

// MarkBootstrapped records that a token bootstrapped the cluster at now.
func MarkBootstrapped(annotations map[string]string, now time.Time) {
	annotations[v1alpha1.BootstrappedAnnotation] = now.UTC().Format(time.RFC3339)
}

// Bootstrapped returns when the cluster was last bootstrapped, and whether
// it ever was. A value that does not parse still counts as bootstrapped.
func Bootstrapped(annotations map[string]string) (time.Time, bool) {
	v, ok := annotations[v1alpha1.BootstrappedAnnotation]
	if !ok {
		return time.Time{}, false
	}
	at, _ := time.Parse(time.RFC3339, v)
	return at, true
}
