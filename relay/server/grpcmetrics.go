package server

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// grpcMetrics count and time every call the relay gRPC server handles,
// under the names and labels of go-grpc-middleware's Prometheus server
// metrics, so that the dashboards and alerts written for those work on
// relay-server as they are.
type grpcMetrics struct {
	started  *prometheus.CounterVec
	handled  *prometheus.CounterVec
	handling *prometheus.HistogramVec
}

// gRPC call types, as grpc_type labels them.
const (
	grpcUnary        = "unary"
	grpcClientStream = "client_stream"
	grpcServerStream = "server_stream"
	grpcBidiStream   = "bidi_stream"
)

// allCodes are the gRPC status codes, from OK to Unauthenticated.
var allCodes = func() []codes.Code {
	var cs []codes.Code
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		cs = append(cs, c)
	}
	return cs
}()

func newGRPCMetrics(reg prometheus.Registerer) *grpcMetrics {
	g := &grpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total",
			Help: "Total number of RPCs started on the server.",
		}, []string{"grpc_type", "grpc_service", "grpc_method"}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "grpc_server_handling_seconds",
			Help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server; a stream's is how long it stayed open.",
			// Prometheus' default buckets; a relay stream stays open
			// for hours and counts in +Inf.
			Buckets: prometheus.DefBuckets,
		}, []string{"grpc_type", "grpc_service", "grpc_method"}),
	}
	reg.MustRegister(g.started, g.handled, g.handling)
	return g
}

// initialize creates every method's series of gs at zero, every code
// included, so that rates and ratios exist before the first call.
func (g *grpcMetrics) initialize(gs *grpc.Server) {
	for service, info := range gs.GetServiceInfo() {
		for _, m := range info.Methods {
			typ := streamType(m.IsClientStream, m.IsServerStream)
			g.started.WithLabelValues(typ, service, m.Name)
			g.handling.WithLabelValues(typ, service, m.Name)
			for _, c := range allCodes {
				g.handled.WithLabelValues(typ, service, m.Name, c.String())
			}
		}
	}
}

// unary is the server's unary interceptor.
func (g *grpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	done := g.start(grpcUnary, info.FullMethod)
	resp, err := handler(ctx, req)
	done(err)
	return resp, err
}

// stream is the server's stream interceptor.
func (g *grpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	done := g.start(streamType(info.IsClientStream, info.IsServerStream), info.FullMethod)
	err := handler(srv, ss)
	done(err)
	return err
}

// start counts a call of fullMethod that starts now and returns what
// records its end. Latency is measured on the monotonic wall clock, not the
// server's injected clock, which tests may hold still.
func (g *grpcMetrics) start(typ, fullMethod string) func(error) {
	service, method := splitMethod(fullMethod)
	g.started.WithLabelValues(typ, service, method).Inc()
	begun := time.Now()
	return func(err error) {
		g.handled.WithLabelValues(typ, service, method, status.Code(err).String()).Inc()
		g.handling.WithLabelValues(typ, service, method).Observe(time.Since(begun).Seconds())
	}
}

func streamType(client, server bool) string {
	switch {
	case client && server:
		return grpcBidiStream
	case client:
		return grpcClientStream
	case server:
		return grpcServerStream
	}
	return grpcUnary
}

// splitMethod splits "/package.Service/Method" into its service and method.
func splitMethod(fullMethod string) (string, string) {
	service, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return "unknown", "unknown"
	}
	return service, method
}
