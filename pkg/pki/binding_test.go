package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"
)

const testUID = "6f1c1a52-8d0e-4c8e-9d4a-2f0b5b7f3c11"

func TestSignBindsTheCertificateToTheClusterUID(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	for _, ttl := range []time.Duration{time.Hour, 30 * time.Second, 24 * time.Hour} {
		iss, err := NewIssuer(p.inter, Policy{Role: RoleClient, TTL: ttl}, t0)
		if err != nil {
			t.Fatal(err)
		}
		now := t0.Add(1234 * time.Millisecond)
		got, err := iss.Sign(mustCSR(t, mustKey(t, ECDSAP256), "cluster-1"), Identity{DNSNames: []string{"cluster-1"}, ClusterUID: testUID}, now)
		if err != nil {
			t.Fatalf("TTL %s: Sign: %v", ttl, err)
		}
		uid, ok, err := ClusterUID(got.Cert)
		if err != nil || !ok || uid != testUID {
			t.Errorf("TTL %s: ClusterUID = %q, %v, %v; want %q, true, nil", ttl, uid, ok, err, testUID)
		}
		// NotBefore and NotAfter hold whole seconds: the issue time read
		// back is the second of issue, or the one before for a lifetime
		// whose backdate is not whole seconds.
		if at := IssuedAt(got.Cert); at.After(now) || now.Sub(at) >= 2*time.Second {
			t.Errorf("TTL %s: IssuedAt = %s, want within a second or two before %s (NotBefore %s)", ttl, at, now, got.Cert.NotBefore)
		}
		if name, err := ClientIdentity(got.Cert); err != nil || name != "cluster-1" {
			t.Errorf("TTL %s: a bound certificate's identity = %q, %v; want cluster-1", ttl, name, err)
		}
	}
}

func TestAnUnboundCertificateHasNoClusterUIDAndIsIssuedAtNotBefore(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	iss, err := NewIssuer(p.inter, Policy{Role: RoleClient, TTL: time.Hour}, t0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := iss.Sign(mustCSR(t, mustKey(t, ECDSAP256), "cluster-1"), Identity{DNSNames: []string{"cluster-1"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if uid, ok, err := ClusterUID(got.Cert); ok || err != nil || uid != "" {
		t.Errorf("ClusterUID of an unbound certificate = %q, %v, %v; want none", uid, ok, err)
	}
	if at := IssuedAt(got.Cert); !at.Equal(got.Cert.NotBefore) {
		t.Errorf("IssuedAt = %s, want NotBefore %s", at, got.Cert.NotBefore)
	}
}

func TestSignRefusesAClusterUIDThatCannotBind(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	iss, err := NewIssuer(p.inter, Policy{Role: RoleClient, TTL: time.Hour}, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"has space", strings.Repeat("a", MaxClusterUIDLength+1), "uid/with=slash"} {
		_, err := iss.Sign(mustCSR(t, mustKey(t, ECDSAP256), "cluster-1"), Identity{DNSNames: []string{"cluster-1"}, ClusterUID: uid}, t0)
		if err == nil || !strings.Contains(err.Error(), "identity: cluster UID") {
			t.Errorf("UID %q: Sign error %v, want it to name the cluster UID", uid, err)
		}
	}
}

// certWithSubject returns a self-signed certificate whose subject holds
// the serialNumber values given, for ClusterUID to read.
func certWithSubject(t testing.TB, values ...any) *x509.Certificate {
	t.Helper()
	name := pkix.Name{CommonName: "cluster-1"}
	for _, v := range values {
		name.ExtraNames = append(name.ExtraNames, pkix.AttributeTypeAndValue{Type: oidSerialNumber, Value: v})
	}
	key := mustKey(t, ECDSAP256)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: name, NotBefore: t0, NotAfter: t0.Add(time.Hour), DNSNames: []string{"cluster-1"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestClusterUIDJudgesTheSubjectSerialNumbers(t *testing.T) {
	tests := []struct {
		name    string
		values  []any
		uid     string
		ok      bool
		wantErr string
	}{
		{"no serialNumber is no binding", nil, "", false, ""},
		{"a serialNumber of someone else is no binding", []any{"device-42"}, "", false, ""},
		{"the prefix and a UID bind", []any{ClusterUIDPrefix + testUID}, testUID, true, ""},
		{"a binding beside someone else's serialNumber binds", []any{"device-42", ClusterUIDPrefix + testUID}, testUID, true, ""},
		{"the prefix with nothing after it is malformed", []any{ClusterUIDPrefix}, "", false, "must have 1 to"},
		{"a UID with a forbidden character is malformed", []any{ClusterUIDPrefix + "a_b"}, "", false, "only letters, digits and '-'"},
		{"two bindings are malformed", []any{ClusterUIDPrefix + testUID, ClusterUIDPrefix + testUID}, "", false, "two cluster bindings"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			uid, ok, err := ClusterUID(certWithSubject(t, tc.values...))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || ok || uid != "" {
					t.Errorf("ClusterUID = %q, %v, %v; want an error containing %q", uid, ok, err, tc.wantErr)
				}
				return
			}
			if err != nil || ok != tc.ok || uid != tc.uid {
				t.Errorf("ClusterUID = %q, %v, %v; want %q, %v, nil", uid, ok, err, tc.uid, tc.ok)
			}
		})
	}
}

// FuzzClusterUID reads arbitrary subjects (DER RDN sequences) the way
// x509.ParseCertificate leaves them: no panic, a UID only when it is
// allowed, never a UID and an error at once, and a UID found always
// round-trips through a signature.
func FuzzClusterUID(f *testing.F) {
	for _, values := range [][]any{nil, {ClusterUIDPrefix + testUID}, {"device-42", ClusterUIDPrefix + "x"}, {ClusterUIDPrefix + "a", ClusterUIDPrefix + "b"}} {
		f.Add(certWithSubject(f, values...).RawSubject)
	}
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte("not DER"))
	p := newTestPKI(f, ECDSAP256)
	iss, err := NewIssuer(p.inter, Policy{Role: RoleClient, TTL: time.Hour}, t0)
	if err != nil {
		f.Fatal(err)
	}
	csr := mustCSR(f, mustKey(f, ECDSAP256), "cluster-1")
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rdns pkix.RDNSequence
		if rest, err := asn1.Unmarshal(raw, &rdns); err != nil || len(rest) > 0 {
			return
		}
		cert := &x509.Certificate{RawSubject: raw}
		cert.Subject.FillFromRDNSequence(&rdns)
		uid, ok, err := ClusterUID(cert)
		switch {
		case err != nil && (ok || uid != ""):
			t.Fatalf("ClusterUID returned %q, %v with error %v", uid, ok, err)
		case !ok && uid != "":
			t.Fatalf("ClusterUID returned %q without a binding", uid)
		case !ok:
			return
		}
		if err := CheckClusterUID(uid); err != nil {
			t.Fatalf("ClusterUID returned %q, which CheckClusterUID refuses: %v", uid, err)
		}
		got, err := iss.Sign(csr, Identity{DNSNames: []string{"cluster-1"}, ClusterUID: uid}, t0)
		if err != nil {
			t.Fatalf("Sign with UID %q: %v", uid, err)
		}
		if back, ok, err := ClusterUID(got.Cert); back != uid || !ok || err != nil {
			t.Fatalf("UID %q signed and read back as %q, %v, %v", uid, back, ok, err)
		}
	})
}
