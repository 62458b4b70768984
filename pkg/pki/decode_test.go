package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestDecodeCertificatesSaysWhichBlockAndWhy(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	cert := EncodeCertificates(p.inter.Cert)
	key := mustPEM(t, p.inter.Key)
	tooMany := []byte(strings.Repeat(string(cert), 12))
	root := EncodeCertificates(p.root.Cert)
	corrupt := []byte(strings.Replace(string(cert), "\n", "\n!!!!", 2))
	unterminated := cert[:len(cert)-len("-----END CERTIFICATE-----\n")]
	for _, tc := range []struct {
		name  string
		input []byte
		n     int
		want  string
	}{
		{"a chain decodes in order", append(append([]byte{}, cert...), EncodeCertificates(p.root.Cert)...), 2, ""},
		{"surrounding whitespace is fine", []byte("\n\n" + string(cert) + "\n  \n"), 1, ""},
		{"an empty input is named", []byte("  \n"), 0, "input is empty"},
		{"text that is not PEM is named", []byte("hello"), 0, "no PEM data found"},
		{"a key among certificates is named by block", append(append([]byte{}, cert...), key...), 0, `block 2 ("PRIVATE KEY"): expected "CERTIFICATE"`},
		{"garbage after the last block is named", append(append([]byte{}, cert...), "trailing"...), 0, `block 1 ("CERTIFICATE"): followed by 8 bytes that are not PEM: "trailing"`},
		{"long garbage is named by its start", append(append([]byte{}, cert...), strings.Repeat("x", 100)...), 0, `followed by 100 bytes that are not PEM: "xxxxxxxxxxxxxxxxxxxxxxxx"...`},
		{"text before the first block is ignored", append([]byte("Certificate:\n    Data: ...\n"), cert...), 1, ""},
		{"a corrupt block between good ones is named, not skipped", append(append(append([]byte{}, cert...), corrupt...), root...), 0, `block 2 ("CERTIFICATE"): is not valid PEM`},
		{"a last block without its END line is named", append(append([]byte{}, cert...), unterminated...), 0, `block 2 ("CERTIFICATE"): is not valid PEM: its END line is missing`},
		{"a lone corrupt block is named", corrupt, 0, `block 1 ("CERTIFICATE"): is not valid PEM`},
		{"a block that is not DER is named", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), 0, `block 1 ("CERTIFICATE"): failed to parse certificate`},
		{"too long a chain is refused with its length", tooMany, 0, "chain has 12 certificates, more than the 10 allowed"},
		{"too large an input is refused", make([]byte, MaxPEMBytes+1), 0, "more than the 65536 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := DecodeCertificates(tc.input)
			wantErr(t, err, tc.want)
			if len(certs) != tc.n {
				t.Errorf("decoded %d certificates, want %d", len(certs), tc.n)
			}
		})
	}
	if _, err := DecodeCertificate(append(append([]byte{}, cert...), cert...)); err == nil || !strings.Contains(err.Error(), "expected one certificate, found 2") {
		t.Errorf("DecodeCertificate of two: %v", err)
	}
	if _, err := DecodeCertificate(nil); err == nil {
		t.Error("DecodeCertificate(nil) returned no error")
	}
}

func TestDecodePrivateKeyReadsEveryEncoding(t *testing.T) {
	ec := mustKey(t, ECDSAP256).(*ecdsa.PrivateKey)
	rk := mustKey(t, RSA2048).(*rsa.PrivateKey)
	ed := mustKey(t, Ed25519Key).(ed25519.PrivateKey)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	for _, tc := range []struct {
		name  string
		input []byte
		want  string
	}{
		{"PKCS#1 RSA decodes", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), ""},
		{"SEC1 EC decodes", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ""},
		{"PKCS#8 ECDSA decodes", mustPEM(t, ec), ""},
		{"PKCS#8 RSA decodes", mustPEM(t, rk), ""},
		{"PKCS#8 Ed25519 decodes", mustPEM(t, ed), ""},
		{"an encrypted PKCS#8 key is refused", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "the key is encrypted"},
		{"a legacy encrypted key is refused", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1}}), "the key is encrypted"},
		{"a certificate in tls.key is named", EncodeCertificates(newTestPKI(t, ECDSAP256).root.Cert), `block 1 ("CERTIFICATE"): expected "PRIVATE KEY"`},
		{"a SEC1 body labelled PKCS#1 is refused", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: sec1}), "failed to parse private key"},
		{"two keys are refused", append(mustPEM(t, ec), mustPEM(t, ec)...), "input has 2 PEM blocks: expected one private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := DecodePrivateKey(tc.input)
			wantErr(t, err, tc.want)
			if tc.want == "" && key == nil {
				t.Error("no key returned")
			}
		})
	}
}

func TestDecodeCSRChecksTheBlock(t *testing.T) {
	good, err := NewCSR(mustKey(t, ECDSAP256), "cluster-1")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := DecodeCSR(good)
	if err != nil || csr.DNSNames[0] != "cluster-1" || csr.Subject.CommonName != "cluster-1" {
		t.Fatalf("DecodeCSR(good) = %v, %v", csr, err)
	}
	wantErr(t, func() error { _, err := DecodeCSR(mustPEM(t, mustKey(t, ECDSAP256))); return err }(), `expected "CERTIFICATE REQUEST"`)
	wantErr(t, func() error {
		_, err := DecodeCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0}}))
		return err
	}(), "failed to parse certificate request")
	wantErr(t, func() error { _, err := DecodeCSR(append(append([]byte{}, good...), good...)); return err }(), "input has 2 PEM blocks: expected one certificate request")
	wantErr(t, func() error { _, err := NewCSR(mustKey(t, ECDSAP256)); return err }(), "at least one DNS name")
	wantErr(t, func() error { _, err := NewCSR(mustKey(t, ECDSAP256), "Cluster"); return err }(), `use "cluster"`)
}

func TestKeyMatchesCertificate(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	wantErr(t, KeyMatchesCertificate(p.inter.Key, p.inter.Cert), "")
	wantErr(t, KeyMatchesCertificate(p.root.Key, p.inter.Cert), "does not match")
	wantErr(t, KeyMatchesCertificate(mustKey(t, RSA2048), p.inter.Cert), "does not match")
}

func TestKeySpecs(t *testing.T) {
	if (KeySpec{}).String() != "ECDSA P-256" || RSA4096.String() != "RSA 4096" || Ed25519Key.String() != "Ed25519" {
		t.Errorf("KeySpec names: %s %s %s", KeySpec{}, RSA4096, Ed25519Key)
	}
	if _, err := KeySpecOf("not a key"); err == nil {
		t.Error("KeySpecOf(string) returned no error")
	}
	if err := checkAllowed(mustKey(t, ECDSAP384).Public(), []KeySpec{ECDSAP256}); err == nil || !strings.Contains(err.Error(), "key ECDSA P-384 is not allowed: use one of ECDSA P-256") {
		t.Errorf("checkAllowed = %v", err)
	}
}
