package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcxds "google.golang.org/grpc/xds" // the xds:/// resolver and balancers, for the proxyless clients

	"github.com/fairway-lb/fairway/bench/backend"
	"github.com/fairway-lb/fairway/bench/hist"
	"github.com/fairway-lb/fairway/client"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/cliflag"
)

// demoConfig is what `fairway demo` runs.
type demoConfig struct {
	duration  time.Duration // per client kind
	rate      float64       // requests per second, all channels together
	channels  int           // channels per client kind
	slow      float64       // service-time factor of the slow backend
	logLevel  string
	logFormat string
}

// demoPod is one backend of the demo.
type demoPod struct {
	ip, zone string
	slow     bool
}

var demoPods = []demoPod{
	{"127.0.0.1", "zone-a", false}, {"127.0.0.2", "zone-a", false},
	{"127.0.0.3", "zone-b", false}, {"127.0.0.4", "zone-b", true},
	{"127.0.0.5", "zone-c", false}, {"127.0.0.6", "zone-c", false},
}

var demoZones = []string{"zone-a", "zone-b", "zone-c"}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c demoConfig
	fs := flag.NewFlagSet("fairway demo", flag.ContinueOnError)
	fs.DurationVar(&c.duration, "duration", 7*time.Second, "load duration per client kind")
	fs.Float64Var(&c.rate, "rate", 1200, "requests per second (all channels of one kind together)")
	fs.IntVar(&c.channels, "channels", 6, "client channels per kind")
	fs.Float64Var(&c.slow, "slow-factor", 5, "how many times slower the slow backend serves")
	fs.StringVar(&c.logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	if err := cliflag.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	switch {
	case c.duration <= 0 || c.duration > 10*time.Minute:
		return fmt.Errorf("--duration must be in (0, 10m], got %v", c.duration)
	case c.rate <= 0 || c.rate > 20000:
		return fmt.Errorf("--rate must be in (0, 20000], got %v", c.rate)
	case c.channels < 1 || c.channels > 100:
		return fmt.Errorf("--channels must be in [1, 100], got %d", c.channels)
	case c.slow < 1:
		return fmt.Errorf("--slow-factor must be >= 1, got %v", c.slow)
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		return err
	}
	return demo(ctx, c, log, stdout)
}

func demo(ctx context.Context, c demoConfig, log *slog.Logger, out io.Writer) error {
	// Backends: six pods on 127.0.0.1-6, one port, three zones, one slow.
	pods, port, err := startDemoPods(c.slow)
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range pods {
			p.Stop()
		}
	}()

	// Control plane: the xDS server, fed the service's topology.
	xds := xdsserver.New(xdsserver.WithLogger(log))
	defer xds.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = xds.Serve(lis) }()
	key := topology.ServiceKey{Namespace: "default", Name: "echo", Port: int32(port)}
	svc := &topology.Service{Key: key, Policy: topology.DefaultPolicy()}
	for _, p := range demoPods {
		svc.Endpoints = append(svc.Endpoints, topology.Endpoint{
			Address: p.ip, Port: int32(port), Zone: p.zone, Hostname: "echo-" + strings.TrimPrefix(p.ip, "127.0.0."),
			Ready: true, Serving: true, Weight: 1,
		})
	}
	topology.SortEndpoints(svc.Endpoints)
	xds.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{svc}))
	xdsAddr := lis.Addr().String()
	target := key.ResourceName()

	fmt.Fprintf(out, "Fairway demo: control plane on %s serving %s; 6 backends on 127.0.0.1-6:%d in 3 zones, 127.0.0.4 %gx slower.\n",
		xdsAddr, target, port, c.slow)
	fmt.Fprintf(out, "Each client kind sends %.0f req/s (Poisson) from %d channels for %v.\n\n", c.rate, c.channels, c.duration)

	// The proxyless grpc-go clients get their bootstrap through a resolver of
	// their own (GRPC_XDS_BOOTSTRAP_CONFIG is read only at process start).
	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}]}],"node":{"id":"fairway-demo","locality":{"zone":"zone-a"}}}`, xdsAddr)
	xdsResolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		return fmt.Errorf("xds bootstrap: %w", err)
	}

	kinds := []struct {
		name string
		dial func(i int) (*grpc.ClientConn, error)
	}{
		{"proxyless gRPC least_request", func(int) (*grpc.ClientConn, error) {
			return grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(xdsResolver))
		}},
		{"Fairway default", func(i int) (*grpc.ClientConn, error) {
			return grpc.NewClient("fairway:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()),
				client.WithFairway(client.WithXDSServers(xdsAddr), client.WithZone(demoZones[i%len(demoZones)]), client.WithLogger(log)))
		}},
	}
	results := make([]demoResult, len(kinds))
	for k, kind := range kinds {
		fmt.Fprintf(out, "running %s ...\n", kind.name)
		r, err := demoLoad(ctx, c, kind.dial)
		if err != nil {
			return fmt.Errorf("%s: %w", kind.name, err)
		}
		results[k] = r
	}
	fmt.Fprintln(out)
	printDemo(out, results, kinds[0].name, kinds[1].name, port)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// startDemoPods starts the six backends on the first port, from 50051 up,
// free on all six addresses.
func startDemoPods(slow float64) ([]*backend.Backend, int, error) {
	var lastErr error
	for port := 50051; port < 50151; port++ {
		pods := make([]*backend.Backend, 0, len(demoPods))
		ok := true
		for i, p := range demoPods {
			spec := backend.Spec{Index: i, IP: p.ip, Zone: p.zone, Capacity: 8, Median: 4 * time.Millisecond, Sigma: 0.3, SlowFactor: 1, ColdFactor: 1}
			if p.slow {
				spec.SlowFactor = slow
			}
			b := backend.New(spec, time.Second, 600)
			if err := b.Start(port); err != nil {
				lastErr = err
				ok = false
				break
			}
			pods = append(pods, b)
		}
		if ok {
			return pods, port, nil
		}
		for _, b := range pods {
			b.Stop()
		}
	}
	return nil, 0, fmt.Errorf("no port in 50051-50150 is free on 127.0.0.1-6: %w", lastErr)
}

// demoResult is what one client kind saw.
type demoResult struct {
	perPod   [6]*hist.Histogram
	all      *hist.Histogram
	errors   int64
	requests int64
}

// demoLoad opens c.channels channels with dial and sends Poisson arrivals at
// c.rate for c.duration, every request with a 1 s deadline; bounded in time
// and in count.
func demoLoad(ctx context.Context, c demoConfig, dial func(int) (*grpc.ClientConn, error)) (demoResult, error) {
	res := demoResult{all: &hist.Histogram{}}
	for i := range res.perPod {
		res.perPod[i] = &hist.Histogram{}
	}
	conns := make([]*grpc.ClientConn, c.channels)
	for i := range conns {
		cc, err := dial(i)
		if err != nil {
			return res, err
		}
		defer cc.Close()
		conns[i] = cc
	}
	// Warm up: one request per channel so connections and xDS are settled.
	for _, cc := range conns {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := backend.Call(wctx, cc, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return res, fmt.Errorf("warm-up request: %w", err)
		}
	}

	var mu sync.Mutex // guards res
	var wg sync.WaitGroup
	rng := rand.New(rand.NewPCG(1, 2))
	maxRequests := int(c.rate*c.duration.Seconds()) * 2
	start := time.Now()
	next := start
	for n := 0; n < maxRequests && ctx.Err() == nil; n++ {
		next = next.Add(time.Duration(rng.ExpFloat64() / c.rate * float64(time.Second)))
		if next.Sub(start) >= c.duration {
			break
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		cc := conns[n%len(conns)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			t0 := time.Now()
			pod, err := backend.Call(rctx, cc)
			d := time.Since(t0)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			res.requests++
			if err != nil {
				res.errors++
				return
			}
			res.all.Record(d)
			if pod >= 0 && pod < len(res.perPod) {
				res.perPod[pod].Record(d)
			}
		}()
	}
	wg.Wait()
	if res.requests == 0 {
		return res, errors.New("no request was sent")
	}
	return res, nil
}

func printDemo(out io.Writer, results []demoResult, left, right string, port int) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(out, "[1] %s    [2] %s\n\n", left, right)
	fmt.Fprintf(tw, "backend\tzone\t[1] share\tp50\tp99\t[2] share\tp50\tp99\n")
	for i, p := range demoPods {
		name := fmt.Sprintf("%s:%d", p.ip, port)
		if p.slow {
			name += " (slow)"
		}
		fmt.Fprintf(tw, "%s\t%s", name, p.zone)
		for _, r := range results {
			h := r.perPod[i]
			share := 0.0
			if ok := r.requests - r.errors; ok > 0 {
				share = float64(h.Count()) / float64(ok)
			}
			fmt.Fprintf(tw, "\t%.1f%%\t%s\t%s", 100*share, ms(h.Quantile(0.5)), ms(h.Quantile(0.99)))
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "all\t")
	for _, r := range results {
		fmt.Fprintf(tw, "\t%d req, %d err\t%s\t%s", r.requests, r.errors, ms(r.all.Quantile(0.5)), ms(r.all.Quantile(0.99)))
	}
	fmt.Fprintln(tw)
	tw.Flush()
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
