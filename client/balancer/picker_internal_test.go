package balancer

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/strategy"
	_ "github.com/fairway-lb/fairway/client/strategy/all" // registers p2c
)

// TestPicker_AllocatesNothing: the gRPC picker over a pool's picker, pick
// and done together, allocates nothing.
func TestPicker_AllocatesNothing(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	chain, err := strategy.ParseChain([]byte(`[{"p2c":{"latency_aware":true}}]`))
	if err != nil {
		t.Fatal(err)
	}
	pool := strategy.NewPool(strategy.BuildOptions{Clock: clk})
	pool.SetChain(chain)
	added, _ := pool.Update([]strategy.Member{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80"}}, "", nil)
	for _, e := range added {
		pool.SetConnected(e, true)
	}
	pp, _, ok := pool.Build()
	if !ok {
		t.Fatal("Build: no picker over two connected endpoints")
	}
	p := newPicker(pp)
	info := balancer.PickInfo{Ctx: context.Background()}
	if got := testing.AllocsPerRun(100, func() {
		r, err := p.Pick(info)
		if err != nil {
			t.Fatal(err)
		}
		r.Done(balancer.DoneInfo{})
	}); got != 0 {
		t.Errorf("allocs per pick = %v, want 0", got)
	}
}
