package main

import (
	"bufio"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// The floor is a bare server doing exactly the cryptographic work of a
// bootstrap and nothing else: a TLS 1.3 handshake with relay-server's own
// certificate and tls.Config shape (Go's default key exchanges, so the
// hybrid X25519MLKEM768 where the client offers it; an optional client
// certificate; h2 by ALPN), then a token compared in constant time and a
// CSR signed with pkg/pki's Issuer under relay-server's signing CA. No
// HTTP/2, no gRPC, no Kubernetes, no logs, no metrics.
//
// loadgen runs it as a second process of its own binary ("loadgen floor"),
// so that its process CPU is read the same way as relay-server's.

// floorCommand is the first argument that makes loadgen the floor server.
const floorCommand = "floor"

// Files the floor reads from its --dir, written by startFloor.
const (
	floorServerCert  = "server.crt"
	floorServerKey   = "server.key"
	floorSigningCert = "signing.crt"
	floorSigningKey  = "signing.key"
	floorSigningCA   = "signing-ca.crt"
	floorRootCA      = "root.crt"
	floorToken       = "token"
)

// maxFloorFrame bounds a frame the floor reads, as relay-server bounds a
// message.
const maxFloorFrame = 64 << 10

// floorMain runs the floor server until it is killed.
func floorMain(args []string) error {
	fs := flag.NewFlagSet(floorCommand, flag.ContinueOnError)
	dir := fs.String("dir", "", "folder with the server certificate, the signing CA and the token")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(*dir, name))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return b
	}
	server, errs := relaysecret.Decode(relaysecret.Server, map[string][]byte{
		"tls.crt": read(floorServerCert), "tls.key": read(floorServerKey), "ca.crt": read(floorRootCA)}, "")
	if len(errs) > 0 {
		return fmt.Errorf("server secret: %s", relaysecret.Message(errs))
	}
	signing, errs := relaysecret.Decode(relaysecret.Signing, map[string][]byte{
		"tls.crt": read(floorSigningCert), "tls.key": read(floorSigningKey), "ca.crt": read(floorSigningCA)}, "")
	if len(errs) > 0 {
		return fmt.Errorf("signing secret: %s", relaysecret.Message(errs))
	}
	iss, err := pki.NewIssuer(signing.Certified(), pki.Policy{Role: pki.RoleClient, TTL: config.DefaultServer().ClientCertificateTTL.Duration}, time.Now())
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(read(floorRootCA))
	token := read(floorToken)
	// relay-server's serving configuration (relay/server/tlsconfig.go)
	// without its per-handshake lookups.
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*server.TLSCertificate()},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    roots,
		NextProtos:   []string{"h2"},
	}
	lis, err := tls.Listen("tcp", *listen, tc)
	if err != nil {
		return err
	}
	fmt.Println(lis.Addr().String())
	for {
		conn, err := lis.Accept()
		if err != nil {
			return err
		}
		go serveFloor(conn, iss, token)
	}
}

// serveFloor answers one bootstrap: cluster, token and CSR in, the signed
// chain and the root out.
func serveFloor(conn net.Conn, iss *pki.Issuer, token []byte) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	cluster, err1 := readFrame(r)
	tok, err2 := readFrame(r)
	csr, err3 := readFrame(r)
	if err := errors.Join(err1, err2, err3); err != nil {
		return
	}
	if subtle.ConstantTimeCompare(tok, token) != 1 {
		_ = writeFrames(conn, []byte("token"))
		return
	}
	issued, err := iss.SignPEM(csr, pki.Identity{DNSNames: []string{string(cluster)}, ClusterUID: "00000000-0000-0000-0000-000000000000"}, time.Now())
	if err != nil {
		_ = writeFrames(conn, []byte(err.Error()))
		return
	}
	_ = writeFrames(conn, nil, issued.CertPEM, issued.CAPEM)
}

// floorBootstrap is the client's half of one bootstrap against the floor,
// over its own new TLS connection.
func floorBootstrap(addr string, tc *tls.Config, cluster, token string, csr []byte) error {
	d := &net.Dialer{Timeout: 30 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, tc)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := writeFrames(conn, []byte(cluster), []byte(token), csr); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	msg, err := readFrame(r)
	if err != nil {
		return err
	}
	if len(msg) > 0 {
		return fmt.Errorf("floor refused: %s", msg)
	}
	if _, err := readFrame(r); err != nil {
		return err
	}
	_, err = readFrame(r)
	return err
}

// writeFrames writes each frame with a 4-byte length in one write.
func writeFrames(w io.Writer, frames ...[]byte) error {
	var buf []byte
	for _, f := range frames {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(f)))
		buf = append(buf, f...)
	}
	_, err := w.Write(buf)
	return err
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFloorFrame {
		return nil, fmt.Errorf("frame of %d bytes", size)
	}
	b := make([]byte, size)
	_, err := io.ReadFull(r, b)
	return b, err
}
