package balancer

import (
	"context"
	"sync/atomic"
	"time"

	orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/orca"
	"google.golang.org/protobuf/proto"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Server-reported load reaches the pool's endpoints three ways (see
// wire.RIFMetric for the contract with backends):
//
//   - per call: grpc-go parses the ORCA trailer of every finished RPC into
//     balancer.DoneInfo.ServerLoad (this package imports orca, which
//     installs the parser), and the endpoint's done function records it;
//   - out of band: for a chain whose Needs ask for it (OOBInterval), each
//     READY SubConn gets an orca.RegisterOOBListener stream, stopped when
//     the SubConn leaves READY or is removed;
//   - probes: a strategy's picker asks for one through
//     strategy.BuildOptions.Probe (a non-blocking send on a buffered
//     channel, dropped when full); the balancer's probe goroutine sends a
//     unary grpc.health.v1.Health/Check on the endpoint's SubConn (through
//     a producer, grpc-go's way of giving a balancer a SubConn's
//     transport) and records the ORCA report of its trailer. At most
//     maxProbes are under way at once, each bounded by probeTimeout; an
//     endpoint whose probe brings no report is not probed for
//     unansweredBackoff, so backends that do not report cost a probe
//     every 30 s.

const (
	probeQueue   = 64
	maxProbes    = 16
	probeTimeout = time.Second
	// unansweredBackoff is how long an endpoint whose probe brought no
	// load report (a backend that does not report, or has no health
	// service) is not probed again.
	unansweredBackoff = 30 * time.Second
	// orcaTrailer is the trailer key of a per-call ORCA load report.
	orcaTrailer = "endpoint-load-metrics-bin"
)

// oobListener records a SubConn's out-of-band reports on its endpoint.
type oobListener struct{ e *strategy.Endpoint }

func (l *oobListener) OnLoadReport(r *orcapb.OrcaLoadReport) { l.e.ReportORCA(r) }

// oobLocked starts or stops c's out-of-band report stream to match its
// state and the chain's needs (b.mu held).
func (b *fairwayBalancer) oobLocked(c *conn) {
	var want time.Duration
	if ch := b.pool.Chain(); ch != nil && c.state == connectivity.Ready && !b.closed {
		want = ch.Needs.OOBInterval
	}
	if c.oobStop != nil && c.oobInterval != want {
		c.oobStop()
		c.oobStop, c.oobInterval = nil, 0
	}
	if want > 0 && c.oobStop == nil {
		c.oobStop = orca.RegisterOOBListener(c.sc, &oobListener{e: c.se}, orca.OOBListenerOptions{ReportInterval: want})
		c.oobInterval = want
	}
}

// probe asks for a probe of e; called on the pick path (see
// strategy.BuildOptions.Probe).
func (b *fairwayBalancer) probe(e *strategy.Endpoint) {
	if !e.ProbeWanted() {
		return // it does not report
	}
	select {
	case b.probes <- e:
	default: // enough probes queued
		b.probesDropped.Add(1)
	}
}

// runProbes is the probe goroutine, owned by the balancer: Close stops it
// and waits for it and the probes under way.
func (b *fairwayBalancer) runProbes() {
	defer b.wg.Done()
	slots := make(chan struct{}, maxProbes)
	for {
		select {
		case <-b.done:
			return
		case e := <-b.probes:
			select {
			case slots <- struct{}{}:
			default:
				b.probesDropped.Add(1)
				continue // too many under way
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() { <-slots }()
				b.probeOne(e)
			}()
		}
	}
}

// probeOne sends one health check to e and records the load report of its
// trailer.
func (b *fairwayBalancer) probeOne(e *strategy.Endpoint) {
	sc := e.SubConn
	if sc == nil {
		return
	}
	p, release := sc.GetOrBuildProducer(probeBuilder)
	defer release()
	cc := p.(*probeProducer).cc
	if cc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, probeTimeout)
	defer cancel()
	var tr metadata.MD
	err := cc.Invoke(ctx, healthpb.Health_Check_FullMethodName, &healthpb.HealthCheckRequest{},
		&healthpb.HealthCheckResponse{}, grpc.Trailer(&tr))
	b.probesSent.Add(1)
	if len(tr.Get(orcaTrailer)) == 0 {
		b.logger.Debug("probe brought no load report", "address", e.Addr, "error", err)
		e.ProbeUnanswered(unansweredBackoff)
		return
	}
	for _, v := range tr.Get(orcaTrailer) {
		r := &orcapb.OrcaLoadReport{}
		if err := proto.Unmarshal([]byte(v), r); err != nil {
			b.logger.Debug("probe: bad load report", "address", e.Addr, "error", err)
			return
		}
		e.ReportORCA(r)
	}
}

// probeProducer gives the balancer a SubConn's transport for probes.
type probeProducer struct{ cc grpc.ClientConnInterface }

type probeProducerBuilder struct{}

func (probeProducerBuilder) Build(cci any) (balancer.Producer, func()) {
	cc, _ := cci.(grpc.ClientConnInterface) // always one, as grpc-go documents
	return &probeProducer{cc: cc}, func() {}
}

var probeBuilder balancer.ProducerBuilder = probeProducerBuilder{}

// probeStats count probes, for the metrics (fairway_client_load_probes_total).
type probeStats struct {
	probesSent    atomic.Uint64
	probesDropped atomic.Uint64
}
