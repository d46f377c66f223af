package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"

	"github.com/fairway-lb/fairway/client"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
)

// benchService is the service the pods serve, as the control plane names it.
var benchService = topology.ServiceKey{Namespace: "bench", Name: "echo", Port: 8080}

// controlPlane is an in-process Fairway xDS server fed with the cluster's
// serving pods: a new snapshot on every join and crash, each pod's weight its
// capacity.
type controlPlane struct {
	srv    *xdsserver.Server
	addr   string
	policy topology.Policy
	wg     sync.WaitGroup

	mu      sync.Mutex
	version uint64 // guarded by mu
}

func startControlPlane(ctx context.Context, c *cluster, policy topology.Policy) (*controlPlane, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fairway/bench: control plane listener: %w", err)
	}
	cp := &controlPlane{
		// A run measures the steady state of a control plane whose clients
		// have all connected: no caller-zones warm-up (the library's default)
		// and no republish interval, which would otherwise leave the first
		// seconds of a strategy's run, all of it in short runs, on the
		// callers' spread seen when only the first clients had connected.
		srv: xdsserver.New(xdsserver.WithDebounce(0), xdsserver.WithCallerZonesInterval(0),
			xdsserver.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))),
		addr:   lis.Addr().String(),
		policy: policy,
	}
	cp.wg.Go(func() { _ = cp.srv.Serve(lis) })
	cp.publish(c.serving())
	c.watch(cp.publish)
	deadline := time.Now().Add(5 * time.Second)
	for !cp.srv.Ready() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			cp.close()
			return nil, errors.New("fairway/bench: control plane not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cp, nil
}

func (cp *controlPlane) publish(live []podAddr) {
	eps := make([]topology.Endpoint, 0, len(live))
	for _, p := range live {
		eps = append(eps, topology.Endpoint{
			Address: p.ip, Port: int32(p.port), Zone: p.zone,
			Hostname: fmt.Sprintf("pod-%d", p.index),
			Ready:    true, Serving: true, Weight: p.weight,
		})
	}
	topology.SortEndpoints(eps)
	cp.mu.Lock()
	cp.version++
	v := cp.version
	cp.mu.Unlock()
	cp.srv.Update(topology.NewSnapshot(v, time.Now(), []*topology.Service{{Key: benchService, Policy: cp.policy, Endpoints: eps}}))
}

func (cp *controlPlane) close() {
	cp.srv.Close()
	cp.wg.Wait()
}

// grpcXDSDialer is proxyless grpc-go (xds:///) through the control plane, with
// the policy it was made with.
type grpcXDSDialer struct {
	cp *controlPlane
}

// newLeastRequestDialer uses the control plane's default policy: least
// request (2 choices) and outlier detection.
func newLeastRequestDialer(ctx context.Context, _ Config, c *cluster) (dialer, error) {
	return newGRPCXDSDialer(ctx, c, topology.DefaultPolicy())
}

// WRRBlackout is the blackout period the control plane gives grpc_wrr in
// real runs. A run measures the steady state, in which the pods have
// reported for longer than gRFC A58's default 10 s blackout; a strategy's
// run lasts a few seconds, so the blackout is cut to this (the simulation
// models the steady state with the defaults instead).
const WRRBlackout = 100 * time.Millisecond

// newWRRDialer uses weighted_round_robin on the pods' per-call ORCA reports,
// with outlier detection as in the default policy.
func newWRRDialer(ctx context.Context, _ Config, c *cluster) (dialer, error) {
	p := topology.DefaultPolicy()
	p.LB, p.ChoiceCount = topology.WeightedRoundRobin, 0
	p.WRR = &topology.WRR{BlackoutPeriod: WRRBlackout}
	return newGRPCXDSDialer(ctx, c, p)
}

func newGRPCXDSDialer(ctx context.Context, c *cluster, policy topology.Policy) (dialer, error) {
	cp, err := startControlPlane(ctx, c, policy)
	if err != nil {
		return nil, err
	}
	return &grpcXDSDialer{cp: cp}, nil
}

func (d *grpcXDSDialer) dial(ch int, zone string) (*grpc.ClientConn, error) {
	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}],"server_features":["ignore_resource_deletion"]}],`+
		`"node":{"id":"bench-client-%d","locality":{"zone":%q}}}`, d.cp.addr, ch, zone)
	var b resolver.Builder
	b, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("xds:///"+benchService.ResourceName(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(b), fastBackoff)
}

func (d *grpcXDSDialer) close() { d.cp.close() }

// fairwayDialer is the Fairway client (fairway:///) through the control
// plane, with the strategy chain override chain ("" = the client's default
// composition), each channel in its own zone.
type fairwayDialer struct {
	cp    *controlPlane
	chain string
}

func newFairwayDialer(strategy string) func(ctx context.Context, cfg Config, c *cluster) (dialer, error) {
	return func(ctx context.Context, cfg Config, c *cluster) (dialer, error) {
		chain, _ := chainFor(cfg, strategy)
		cp, err := startControlPlane(ctx, c, topology.DefaultPolicy())
		if err != nil {
			return nil, err
		}
		return &fairwayDialer{cp: cp, chain: chain}, nil
	}
}

func (d *fairwayDialer) dial(ch int, zone string) (*grpc.ClientConn, error) {
	opts := []client.Option{
		// Each channel stands for one client pod: its own node, so its own
		// xDS stream, and the control plane counts it among the callers.
		client.WithXDSServers(d.cp.addr), client.WithZone(zone), client.WithNodeID(fmt.Sprintf("bench-client-%d", ch)),
		client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		client.WithRegisterer(prometheus.NewRegistry()),
	}
	if d.chain != "" {
		opts = append(opts, client.WithStrategy(d.chain))
	}
	return grpc.NewClient("fairway:///"+benchService.ResourceName(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), client.WithFairway(opts...), fastBackoff)
}

func (d *fairwayDialer) close() { d.cp.close() }
