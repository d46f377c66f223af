package balancer

import (
	"errors"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/client/strategy"
)

var errNoEndpoint = status.Error(codes.Unavailable, strategy.ErrNoEndpoint.Error())

// newPicker wraps a strategy picker as a gRPC picker. A pick reads no clock:
// it returns the endpoint's Done, or, for the one request per endpoint and
// tick whose latency is sampled (strategy.Endpoint.StartSample, one atomic
// load otherwise), its TimedDone.
func newPicker(sp strategy.Picker) balancer.Picker { return &picker{sp: sp} }

// picker is immutable.
type picker struct{ sp strategy.Picker }

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	e, err := p.sp.Pick(info.Ctx)
	if err != nil {
		return balancer.PickResult{}, mapErr(err)
	}
	e.Picked()
	if e.StartSample() {
		return balancer.PickResult{SubConn: e.SubConn, Done: e.TimedDone}, nil
	}
	return balancer.PickResult{SubConn: e.SubConn, Done: e.Done}, nil
}

func mapErr(err error) error {
	if errors.Is(err, strategy.ErrNoEndpoint) {
		return errNoEndpoint
	}
	return err
}
