package localmesh

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// LocalWebhookCA is the common name of the CA of the serving pair a
// relay-webhook that serves a mounted secret is given in its place.
const LocalWebhookCA = "local relay-webhook CA"

// servesFromFiles returns the local folder of a relay-webhook pod that
// serves the certificate of a mounted secret (--certificates=files), or ""
// when it makes its own.
func servesFromFiles(p *Pod) string {
	files, dir := false, ""
	for _, a := range p.Args {
		if a == "--certificates=files" {
			files = true
		}
		if v, ok := strings.CutPrefix(a, "--cert-dir="); ok {
			dir = v
		}
	}
	if !files {
		return ""
	}
	return dir
}

// localServingPair replaces tls.crt and tls.key in dir, the mounted
// secret cert-manager wrote for the webhook's Service name, by a pair for
// 127.0.0.1, where the API server calls the local process, and puts its CA
// beside the mounted secret's ca.crt into the caBundle of the webhook
// configurations in objs on cluster c: in a cluster, the Service name and
// cert-manager's CA injector do that.
func localServingPair(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, dir string) error {
	ca, err := pki.NewRootCA(pki.Options{CommonName: LocalWebhookCA, TTL: 24 * time.Hour})
	if err != nil {
		return err
	}
	leaf, err := ca.IssueServer(pki.Options{CommonName: "relay-webhook", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, TTL: 24 * time.Hour})
	if err != nil {
		return err
	}
	key, err := leaf.KeyPEM()
	if err != nil {
		return err
	}
	// The caBundle also holds the mounted secret's CA, as cert-manager's
	// injector would put it there: relayctl check verifies that secret's
	// certificate against it.
	bundle := ca.CAPEM()
	if mounted, err := os.ReadFile(filepath.Join(dir, "ca.crt")); err == nil {
		bundle = append(append(bundle, '\n'), mounted...)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), leaf.CertPEM(), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), key, 0o600); err != nil {
		return err
	}
	for _, u := range objs {
		if k := u.GetKind(); k != "ValidatingWebhookConfiguration" && k != "MutatingWebhookConfiguration" {
			continue
		}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		if err := c.Get(ctx, types.NamespacedName{Name: u.GetName()}, live); err != nil {
			return fmt.Errorf("failed to read %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		hooks, _, _ := unstructured.NestedSlice(live.Object, "webhooks")
		for _, h := range hooks {
			cc := h.(map[string]any)["clientConfig"].(map[string]any)
			cc["caBundle"] = base64.StdEncoding.EncodeToString(bundle)
		}
		if err := unstructured.SetNestedSlice(live.Object, hooks, "webhooks"); err != nil {
			return err
		}
		if err := c.Update(ctx, live); err != nil {
			return fmt.Errorf("failed to set the caBundle of %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}
