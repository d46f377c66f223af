package balancer

import (
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/client/strategy"
)

var errNoEndpoint = status.Error(codes.Unavailable, strategy.ErrNoEndpoint.Error())

// newPicker wraps a strategy picker as a gRPC picker. When the chain asks
// for latency (opts.Features.LatencyAlpha > 0), each pick reads the clock and
// takes a pooled call record for its Done; otherwise a pick reads no clock and
// returns the endpoint's own Done.
func newPicker(sp strategy.Picker, opts strategy.BuildOptions) balancer.Picker {
	if opts.Features.LatencyAlpha > 0 {
		return &timedPicker{sp: sp, clock: opts.Clock, alpha: opts.Features.LatencyAlpha, penalty: max(opts.Features.FailurePenalty, 1)}
	}
	return &picker{sp: sp}
}

// picker is immutable.
type picker struct{ sp strategy.Picker }

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	e, err := p.sp.Pick(info.Ctx)
	if err != nil {
		return balancer.PickResult{}, mapErr(err)
	}
	e.Picked()
	return balancer.PickResult{SubConn: e.SubConn, Done: e.Done}, nil
}

func mapErr(err error) error {
	if errors.Is(err, strategy.ErrNoEndpoint) {
		return errNoEndpoint
	}
	return err
}

// timedPicker is picker plus per-request latency for latency-aware strategies.
type timedPicker struct {
	sp      strategy.Picker
	clock   clock.PassiveClock
	alpha   float64
	penalty float64
}

// call is one timed request; pooled, its done method value is made once.
type call struct {
	p     *timedPicker
	e     *strategy.Endpoint
	start time.Time
	done  func(balancer.DoneInfo)
}

var callPool sync.Pool

func init() {
	callPool.New = func() any {
		c := &call{}
		c.done = c.finish
		return c
	}
}

func (c *call) finish(di balancer.DoneInfo) {
	d := c.p.clock.Since(c.start)
	e := c.e
	code := codes.OK
	if di.Err != nil {
		code = status.Code(di.Err)
		// A failure counts as at least penalty × the current estimate.
		d = max(d, time.Duration(float64(e.Latency())*c.p.penalty))
	}
	e.ObserveLatency(d, c.p.alpha)
	e.Finish(code)
	c.p, c.e = nil, nil
	callPool.Put(c)
}

func (p *timedPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	e, err := p.sp.Pick(info.Ctx)
	if err != nil {
		return balancer.PickResult{}, mapErr(err)
	}
	e.Picked()
	c := callPool.Get().(*call)
	c.p, c.e, c.start = p, e, p.clock.Now()
	return balancer.PickResult{SubConn: e.SubConn, Done: c.done}, nil
}
