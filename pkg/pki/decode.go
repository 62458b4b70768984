package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// Bounds on what the decoders accept. Real relay secrets are a few KiB.
const (
	// MaxPEMBytes is the largest PEM input accepted.
	MaxPEMBytes = 64 << 10
	// MaxChainLength is the most certificates one chain may hold.
	MaxChainLength = 10
)

// PEM block types.
const (
	blockCertificate = "CERTIFICATE"
	blockCSR         = "CERTIFICATE REQUEST"
	blockPKCS1       = "RSA PRIVATE KEY"
	blockSEC1        = "EC PRIVATE KEY"
	blockPKCS8       = "PRIVATE KEY"
)

// DecodeError says which PEM block of an input is wrong and why. Block
// counts from 1; 0 means the input as a whole.
type DecodeError struct {
	Block  int
	Type   string
	Reason string
}

func (e *DecodeError) Error() string {
	if e.Block == 0 {
		return e.Reason
	}
	return fmt.Sprintf("block %d (%q): %s", e.Block, e.Type, e.Reason)
}

// blocks splits data into its PEM blocks. It refuses inputs over
// MaxPEMBytes, inputs with no block, more than max blocks (tooMany says so,
// given the count), a block that is not valid PEM (encoding/pem would skip
// it silently), and anything but space after the last block, which is
// named. Text before and between blocks, such as the summary `openssl x509
// -text` prints, is ignored.
func blocks(data []byte, max int, tooMany func(n int) string) ([]*pem.Block, error) {
	if len(data) > MaxPEMBytes {
		return nil, &DecodeError{Reason: fmt.Sprintf("input is %d bytes, more than the %d allowed", len(data), MaxPEMBytes)}
	}
	var out []*pem.Block
	n, rest := 0, data
	for {
		block, next := pem.Decode(rest)
		if block == nil {
			break
		}
		if skipped := beginLines(rest[:len(rest)-len(next)]); len(skipped) > 1 {
			return nil, malformed(n+1, skipped[0])
		}
		if n++; n <= max {
			out = append(out, block)
		}
		rest = next
	}
	if n > max {
		return nil, &DecodeError{Reason: tooMany(n)}
	}
	if begins := beginLines(rest); len(begins) > 0 {
		return nil, malformed(n+1, begins[0])
	}
	if n == 0 {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, &DecodeError{Reason: "input is empty: expected PEM data"}
		}
		return nil, &DecodeError{Reason: `no PEM data found: expected a block starting with "-----BEGIN"`}
	}
	if trailing := bytes.TrimSpace(rest); len(trailing) > 0 {
		return nil, &DecodeError{Block: n, Type: out[n-1].Type, Reason: fmt.Sprintf("followed by %d bytes that are not PEM: %s", len(trailing), preview(trailing))}
	}
	return out, nil
}

var beginMarker = []byte("-----BEGIN ")

// beginLines returns the lines of b that start with "-----BEGIN ", as
// encoding/pem looks for them, each from its marker to the end of the line.
func beginLines(b []byte) [][]byte {
	var lines [][]byte
	for i := 0; ; {
		j := bytes.Index(b[i:], beginMarker)
		if j < 0 {
			return lines
		}
		i += j
		if i == 0 || b[i-1] == '\n' {
			line, _, _ := bytes.Cut(b[i:], []byte("\n"))
			lines = append(lines, line)
		}
		i += len(beginMarker)
	}
}

// malformed is the error for block number n, whose BEGIN line is begin,
// when encoding/pem cannot decode it.
func malformed(n int, begin []byte) error {
	typ := bytes.TrimPrefix(bytes.TrimSpace(begin), beginMarker)
	typ, _, _ = bytes.Cut(typ, []byte("-----"))
	return &DecodeError{Block: n, Type: string(typ[:min(len(typ), 64)]),
		Reason: "is not valid PEM: its END line is missing or does not match, or its base64 is corrupt"}
}

// preview quotes the start of b for an error message.
func preview(b []byte) string {
	const max = 24
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// DecodeCertificates decodes a PEM chain of at most MaxChainLength
// certificates, in the order given.
func DecodeCertificates(data []byte) ([]*x509.Certificate, error) {
	bs, err := blocks(data, MaxChainLength, func(n int) string {
		return fmt.Sprintf("chain has %d certificates, more than the %d allowed", n, MaxChainLength)
	})
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(bs))
	for i, b := range bs {
		if b.Type != blockCertificate {
			return nil, &DecodeError{Block: i + 1, Type: b.Type, Reason: "expected \"CERTIFICATE\""}
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, &DecodeError{Block: i + 1, Type: b.Type, Reason: fmt.Sprintf("failed to parse certificate: %v", err)}
		}
		certs = append(certs, cert)
	}
	return certs, nil
}

// DecodeCertificate decodes exactly one PEM certificate.
func DecodeCertificate(data []byte) (*x509.Certificate, error) {
	certs, err := DecodeCertificates(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, &DecodeError{Reason: fmt.Sprintf("expected one certificate, found %d", len(certs))}
	}
	return certs[0], nil
}

// DecodePrivateKey decodes one PEM private key: PKCS#1 ("RSA PRIVATE KEY"),
// SEC1 ("EC PRIVATE KEY") or PKCS#8 ("PRIVATE KEY", including Ed25519).
// Encrypted keys are refused. The key is fully validated, so it is ready to
// sign with.
func DecodePrivateKey(data []byte) (crypto.Signer, error) {
	b, err := keyBlock(data)
	if err != nil {
		return nil, err
	}
	var key any
	switch b.Type {
	case blockPKCS1:
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case blockSEC1:
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case blockPKCS8:
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, keyError(b, fmt.Sprintf("failed to parse private key: %v", err))
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, keyError(b, fmt.Sprintf("unsupported private key type %T", key))
}

// keyBlock decodes the one PEM block of a private key and checks its type.
func keyBlock(data []byte) (*pem.Block, error) {
	bs, err := blocks(data, 1, expectOne("private key"))
	if err != nil {
		return nil, err
	}
	b := bs[0]
	if _, encrypted := b.Headers["Proc-Type"]; encrypted || b.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, keyError(b, "the key is encrypted: store it unencrypted, the secret protects it")
	}
	switch b.Type {
	case blockPKCS1, blockSEC1, blockPKCS8:
		return b, nil
	}
	return nil, keyError(b, `expected "PRIVATE KEY", "RSA PRIVATE KEY" or "EC PRIVATE KEY"`)
}

// expectOne is the too-many message of an input that holds one what.
func expectOne(what string) func(int) string {
	return func(n int) string { return fmt.Sprintf("input has %d PEM blocks: expected one %s", n, what) }
}

func keyError(b *pem.Block, reason string) error {
	return &DecodeError{Block: 1, Type: b.Type, Reason: reason}
}

// DecodeCSR decodes one PEM certificate request. It does not check its
// signature; Issuer.Sign does.
func DecodeCSR(data []byte) (*x509.CertificateRequest, error) {
	bs, err := blocks(data, 1, expectOne("certificate request"))
	if err != nil {
		return nil, err
	}
	b := bs[0]
	if b.Type != blockCSR && b.Type != "NEW CERTIFICATE REQUEST" {
		return nil, &DecodeError{Block: 1, Type: b.Type, Reason: `expected "CERTIFICATE REQUEST"`}
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, &DecodeError{Block: 1, Type: b.Type, Reason: fmt.Sprintf("failed to parse certificate request: %v", err)}
	}
	return csr, nil
}
