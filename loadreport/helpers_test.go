package loadreport_test

import (
	"context"
	"time"

	"google.golang.org/grpc"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/loadreport"
)

func newFakeClock() *testingclock.FakeClock {
	return testingclock.NewFakeClock(time.Unix(1_700_000_000, 0))
}

// serverUnary returns a function that runs body as the handler of one
// application call through r's unary interceptor.
func serverUnary(r *loadreport.Reporter) func(body func() error) {
	intercept := loadreport.UnaryInterceptor(r)
	return func(body func() error) {
		_, _ = intercept(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/test.Service/Call"},
			func(context.Context, any) (any, error) { return nil, body() })
	}
}
