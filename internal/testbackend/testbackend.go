// Package testbackend runs small, real gRPC backends for tests and demos: each
// serves grpc-go's interop TestService (EmptyCall and UnaryCall) on a loopback
// address, answers with its name and counts the RPCs it served.
//
// A backend tells who served an RPC in two ways: the "x-backend" response
// header, and the body of UnaryCall's response payload.
package testbackend

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// HeaderName is the response header carrying the backend's name.
const HeaderName = "x-backend"

// Option configures a Backend.
type Option func(*Backend)

// WithName sets the backend's name (default its address).
func WithName(name string) Option { return func(b *Backend) { b.name = name } }

// WithZone records the backend's zone (for callers' bookkeeping).
func WithZone(zone string) Option { return func(b *Backend) { b.zone = zone } }

// WithDelay makes every RPC take at least d (a slow backend).
func WithDelay(d time.Duration) Option { return func(b *Backend) { b.delay = d } }

// WithError makes every RPC fail at once with code c (a failing backend).
func WithError(c codes.Code) Option { return func(b *Backend) { b.fail = c } }

// Backend is a running gRPC test backend. Its methods are safe for
// concurrent use.
type Backend struct {
	testgrpc.UnimplementedTestServiceServer

	// immutable after Start
	name  string
	zone  string
	delay time.Duration
	fail  codes.Code // OK: answer normally
	lis   net.Listener
	srv   *grpc.Server
	done  chan struct{} // closed when Serve returns

	count    atomic.Int64
	stopOnce sync.Once
}

// Start listens on addr (e.g. "127.0.0.2:0" or "127.0.0.2:9000") and serves
// until Stop.
func Start(addr string, opts ...Option) (*Backend, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fairway/testbackend: listen on %s: %w", addr, err)
	}
	b := &Backend{lis: lis, srv: grpc.NewServer(), done: make(chan struct{})}
	b.name = lis.Addr().String()
	for _, o := range opts {
		o(b)
	}
	testgrpc.RegisterTestServiceServer(b.srv, b)
	go func() {
		defer close(b.done)
		b.srv.Serve(lis)
	}()
	return b, nil
}

// Name is the backend's name.
func (b *Backend) Name() string { return b.name }

// Zone is the backend's zone as given to WithZone.
func (b *Backend) Zone() string { return b.zone }

// Addr is the address the backend listens on.
func (b *Backend) Addr() *net.TCPAddr { return b.lis.Addr().(*net.TCPAddr) }

// Count is the number of RPCs the backend has served.
func (b *Backend) Count() int64 { return b.count.Load() }

// Stop stops the backend, closing its connections, and waits for it.
func (b *Backend) Stop() {
	b.stopOnce.Do(b.srv.Stop)
	<-b.done
}

func (b *Backend) serve(ctx context.Context) error {
	b.count.Add(1)
	grpc.SetHeader(ctx, metadata.Pairs(HeaderName, b.name))
	if b.fail != codes.OK {
		return status.Errorf(b.fail, "fairway/testbackend: %s fails every call", b.name)
	}
	if b.delay > 0 {
		t := time.NewTimer(b.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// EmptyCall implements TestService.
func (b *Backend) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	if err := b.serve(ctx); err != nil {
		return nil, err
	}
	return &testpb.Empty{}, nil
}

// UnaryCall implements TestService; the response payload's body is the
// backend's name.
func (b *Backend) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := b.serve(ctx); err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(b.name)}}, nil
}
