package webhook_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/webhook"
)

// cacheReader serves secrets the way controller-runtime's cache does: a
// deep copy of a stored object.
type cacheReader map[client.ObjectKey]*corev1.Secret

func (r cacheReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	s, ok := r[key]
	if !ok {
		return errNotFound(key)
	}
	s.DeepCopyInto(obj.(*corev1.Secret))
	return nil
}

func (r cacheReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("not supported")
}

// benchReview is a client secret and the admission request carrying it,
// with the handlers of a workload cluster whose root secret holds the
// same ca.crt.
type benchReview struct {
	secret   *corev1.Secret
	req      admission.Request
	handlers map[string]admission.Handler
}

func newBenchReview(b *testing.B) *benchReview {
	f := newPKI(b)
	sec := tlsSecret(b, ns, config.DefaultClientTLSSecret, f.client(b, cluster, pki.Options{}), f.root.CAPEM())
	raw, err := json.Marshal(sec)
	if err != nil {
		b.Fatal(err)
	}
	scheme, err := scheme.Scheme()
	if err != nil {
		b.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster, cfg.ServerAddress = cluster, "relay.example:9900"
	root := f.rootSecret(b)
	reader := cacheReader{client.ObjectKeyFromObject(root): root}
	return &benchReview{
		secret: sec,
		req: admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "bench", Operation: admissionv1.Create, Namespace: ns, Name: sec.Name,
			Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Secret"},
			Object: runtime.RawExtension{Raw: raw},
		}},
		handlers: webhook.Handlers(&cfg, reader, scheme, time.Now),
	}
}

// BenchmarkReviewClientSecret reviews a relay client secret through the
// admission handler and, in the same loop on the same input, validates it
// with pkg/pki alone: the handler's p50 and p99 are reported beside pkg/pki's,
// with their ratio (goal: at most 1.3).
func BenchmarkReviewClientSecret(b *testing.B) {
	r := newBenchReview(b)
	h := r.handlers[webhook.SecretsPath]
	ctx := context.Background()
	d := r.secret.Data
	handler, direct := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		if resp := h.Handle(ctx, r.req); !resp.Allowed {
			b.Fatalf("denied: %v", resp.Result)
		}
		mid := time.Now()
		if _, err := relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: d[relaysecret.KeyTLSCert], relaysecret.KeyTLSKey: d[relaysecret.KeyTLSKey], relaysecret.KeyCACert: d[relaysecret.KeyCACert]}, "", relaysecret.Context{Cluster: cluster, Now: mid}); err != nil {
			b.Fatal(err)
		}
		handler, direct = append(handler, mid.Sub(start)), append(direct, time.Since(mid))
	}
	hp50, hp99 := percentiles(handler)
	dp50, dp99 := percentiles(direct)
	b.ReportMetric(float64(hp50.Microseconds()), "handler-p50-µs")
	b.ReportMetric(float64(hp99.Microseconds()), "handler-p99-µs")
	b.ReportMetric(float64(dp50.Microseconds()), "pki-p50-µs")
	b.ReportMetric(float64(dp99.Microseconds()), "pki-p99-µs")
	b.ReportMetric(float64(hp50)/float64(dp50), "ratio-p50")
	b.ReportMetric(float64(hp99)/float64(dp99), "ratio-p99")
}

// BenchmarkReviewClientSecretAllocs reports the handler's allocations
// alone, beside BenchmarkValidateClientSecretAllocs.
func BenchmarkReviewClientSecretAllocs(b *testing.B) {
	r := newBenchReview(b)
	h := r.handlers[webhook.SecretsPath]
	b.ReportAllocs()
	for b.Loop() {
		h.Handle(context.Background(), r.req)
	}
}

// BenchmarkValidateClientSecretAllocs is the catalogue's validation of the same
// secret, for the allocation comparison.
func BenchmarkValidateClientSecretAllocs(b *testing.B) {
	d := newBenchReview(b).secret.Data
	b.ReportAllocs()
	for b.Loop() {
		_, _ = relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: d[relaysecret.KeyTLSCert], relaysecret.KeyTLSKey: d[relaysecret.KeyTLSKey], relaysecret.KeyCACert: d[relaysecret.KeyCACert]}, "", relaysecret.Context{Cluster: cluster, Now: time.Now()})
	}
}

// BenchmarkReviewClientSecretHTTP serves the AdmissionReview of a client
// secret, as the API server posts it, to the handler's ServeHTTP: decoding
// the review, the review itself and writing the answer, without TLS or a
// connection.
func BenchmarkReviewClientSecretHTTP(b *testing.B) {
	r := newBenchReview(b)
	h := r.handlers[webhook.SecretsPath].(http.Handler)
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &r.req.AdmissionRequest,
	})
	if err != nil {
		b.Fatal(err)
	}
	allowed := []byte(`"allowed":true`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, webhook.SecretsPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !bytes.Contains(rec.Body.Bytes(), allowed) {
			b.Fatalf("not allowed: %s", rec.Body)
		}
	}
}

// BenchmarkReviewsOverHTTPS posts AdmissionReviews of a client secret to
// controller-runtime's webhook server over TLS and HTTP/1.1, as
// relay-webhook serves them and the API server sends them, from parallel
// clients, and reports reviews per second.
func BenchmarkReviewsOverHTTPS(b *testing.B) {
	r := newBenchReview(b)
	f := newPKI(b)
	serving, err := f.signing.IssueServer(pki.Options{DNSNames: []string{"localhost"}, TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	key, _ := serving.KeyPEM()
	pair, err := tls.X509KeyPair(serving.CertPEM(), key)
	if err != nil {
		b.Fatal(err)
	}
	port := freePort(b)
	srv := crwebhook.NewServer(crwebhook.Options{Host: "127.0.0.1", Port: port,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }
			c.NextProtos = []string{"http/1.1"}
		}}})
	srv.Register(webhook.SecretsPath, r.handlers[webhook.SecretsPath].(http.Handler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Start(ctx) }()

	review, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &r.req.AdmissionRequest,
	})
	roots := f.root.CAPEM()
	pool := mustPool(b, roots)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, webhook.SecretsPath)
	post := func() error {
		resp, err := hc.Post(url, "application/json", bytes.NewReader(review))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
		if out.Response == nil || !out.Response.Allowed {
			return fmt.Errorf("review not allowed: %+v", out.Response)
		}
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for post() != nil {
		if time.Now().After(deadline) {
			b.Fatalf("the webhook server did not answer: %v", post())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if post() != nil {
				failed.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reviews/s")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d reviews failed", n)
	}
}

// BenchmarkAPIServerSecretCreate creates a relay client secret (dry run, so
// that every iteration is a create that runs admission) on a local
// cluster, with the validating webhook registered and then without it: the
// ratio of the two is the latency the webhook adds at the API server.
func BenchmarkAPIServerSecretCreate(b *testing.B) {
	e := startWebhook(b, false)
	f := newPKI(b)
	sec := tlsSecret(b, ns, config.DefaultClientTLSSecret, f.client(b, cluster, pki.Options{}), f.root.CAPEM())
	e.mustApplyTB(b, toYAML(b, f.rootSecret(b)))
	// An unthrottled client: client-go's default rate limit would be
	// measured instead of the API server.
	rc := rest.CopyConfig(e.cluster.Config)
	rc.QPS, rc.Burst = -1, 0
	c, err := client.New(rc, client.Options{Scheme: e.cluster.Client.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	create := func(b *testing.B) {
		for b.Loop() {
			if err := c.Create(e.ctx, sec.DeepCopy(), client.DryRunAll); err != nil {
				b.Fatal(err)
			}
		}
	}
	var with, without float64
	b.Run("with-webhook", func(b *testing.B) {
		create(b)
		with = float64(b.Elapsed()) / float64(b.N)
	})
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: config.DefaultValidatingWebhook}}
	if err := e.cluster.Client.Delete(e.ctx, vwc); err != nil {
		b.Fatal(err)
	}
	bad := tlsSecret(b, ns, config.DefaultClientTLSSecret, f.client(b, "cluster-2", pki.Options{}), f.root.CAPEM())
	testenv.Eventually(b, "the API server stops calling the webhook", time.Minute, func() error {
		return e.cluster.Client.Create(e.ctx, bad.DeepCopy(), client.DryRunAll)
	})
	b.Run("without-webhook", func(b *testing.B) {
		create(b)
		without = float64(b.Elapsed()) / float64(b.N)
		b.ReportMetric(with/without, "with/without")
	})
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}
