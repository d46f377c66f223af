package loadreport

import "google.golang.org/grpc"

// UnaryInterceptor is r's own unary interceptor, for the tests.
func UnaryInterceptor(r *Reporter) grpc.UnaryServerInterceptor { return r.unary }
