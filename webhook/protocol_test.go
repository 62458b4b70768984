package webhook_test

import (
	"crypto/tls"
	"testing"
)

// TestTheWebhookServesHTTP1AsTheAPIServerCallsItInACluster offers h2 and
// http/1.1 as a client that prefers HTTP/2 does: relay-webhook takes
// http/1.1, the protocol the API server uses for a webhook behind a
// Service.
func TestTheWebhookServesHTTP1AsTheAPIServerCallsItInACluster(t *testing.T) {
	e := startWebhook(t, false)
	// Not verified: the protocol is what the test looks at.
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("relay-webhook negotiated %q, want http/1.1", p)
	}
}
