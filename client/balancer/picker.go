package balancer

import (
	"errors"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/client/strategy"
)

var errNoEndpoint = status.Error(codes.Unavailable, strategy.ErrNoEndpoint.Error())

// newPicker adapts a pool's picker to gRPC: the endpoint's SubConn and the
// done function the pool chose (see strategy.PoolPicker.Pick).
func newPicker(pp strategy.PoolPicker) balancer.Picker { return &picker{pp: pp} }

// picker is immutable.
type picker struct{ pp strategy.PoolPicker }

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	e, done, err := p.pp.Pick(info.Ctx)
	if err != nil {
		return balancer.PickResult{}, mapErr(err)
	}
	return balancer.PickResult{SubConn: e.SubConn, Done: done}, nil
}

func mapErr(err error) error {
	if errors.Is(err, strategy.ErrNoEndpoint) {
		return errNoEndpoint
	}
	return err
}
