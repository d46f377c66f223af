package balancer

import (
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
)

// EndpointState is one endpoint as a balancer sees it, for debugging.
type EndpointState struct {
	Address         string
	Hostname        string
	Zone            string
	Weight          uint32
	EffectiveWeight float64 // weight after slow start; Weight when no strategy changed it
	Health          endpointattr.Health
	Connectivity    connectivity.State
	Ready           bool // READY and healthy: a candidate
	InFlight        int64
	Picks           uint64
	Finished        uint64
	Failures        uint64            // finished with a code other than OK
	Codes           map[string]uint64 // finished requests by code (non-zero only)
	Latency         time.Duration     // peak-EWMA latency (latency-aware p2c only)
	Ejections       uint64            // times excluded by a strategy (outlier ejections)
	EjectedUntil    time.Time         // end of the current exclusion; zero when none
	FirstSeen       time.Time
	// ReportedRIF is the last requests-in-flight count the endpoint
	// reported of itself (ORCA; load_aware only), valid when Reported.
	ReportedRIF float64
	Reported    bool
}

var (
	liveMu sync.Mutex
	live   = map[string][]*fairwayBalancer{} // by target
)

func register(b *fairwayBalancer) {
	liveMu.Lock()
	defer liveMu.Unlock()
	live[b.target] = append(live[b.target], b)
}

func unregister(b *fairwayBalancer) {
	liveMu.Lock()
	defer liveMu.Unlock()
	bs := live[b.target]
	for i, x := range bs {
		if x == b {
			bs = append(bs[:i:i], bs[i+1:]...)
			break
		}
	}
	if len(bs) == 0 {
		delete(live, b.target)
	} else {
		live[b.target] = bs
	}
}

// Targets returns the targets of the live Fairway balancers, sorted.
func Targets() []string {
	liveMu.Lock()
	defer liveMu.Unlock()
	out := make([]string, 0, len(live))
	for t := range live {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Inspect returns the endpoints of target's balancers (a target dialled by
// several channels lists each channel's endpoints in turn), and false when
// no live balancer serves target. Safe to call from any goroutine.
func Inspect(target string) ([]EndpointState, bool) {
	liveMu.Lock()
	bs := append([]*fairwayBalancer(nil), live[target]...)
	liveMu.Unlock()
	if len(bs) == 0 {
		return nil, false
	}
	var out []EndpointState
	for _, b := range bs {
		out = append(out, b.inspect()...)
	}
	return out, true
}

func (b *fairwayBalancer) inspect() []EndpointState {
	b.mu.Lock()
	defer b.mu.Unlock()
	eps := b.pool.Endpoints()
	out := make([]EndpointState, 0, len(eps))
	for _, se := range eps {
		c := b.conns[se]
		if c == nil {
			continue
		}
		out = append(out, inspectEndpoint(se, c.state))
	}
	return out
}

func inspectEndpoint(se *strategy.Endpoint, state connectivity.State) EndpointState {
	st := EndpointState{
		Address:         se.Addr,
		Hostname:        se.Info.Hostname,
		Zone:            se.Info.Zone,
		Weight:          se.Info.Weight,
		EffectiveWeight: se.EffectiveWeight(),
		Health:          se.Info.Health,
		Connectivity:    state,
		Ready:           state == connectivity.Ready && se.Info.Health == endpointattr.Healthy,
		InFlight:        se.InFlight(),
		Picks:           se.Picks(),
		Latency:         se.Latency(),
		Ejections:       se.Exclusions(),
		EjectedUntil:    se.ExcludedUntil(),
		FirstSeen:       se.Added,
	}
	if rif, stamp, _ := se.ServerLoad(); stamp != 0 {
		st.ReportedRIF, st.Reported = rif, true
	}
	if st.EffectiveWeight == 0 {
		st.EffectiveWeight = float64(se.Info.Weight)
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		n := se.Outcomes(c)
		if n == 0 {
			continue
		}
		if st.Codes == nil {
			st.Codes = map[string]uint64{}
		}
		st.Codes[c.String()] = n
		st.Finished += n
		if c != codes.OK {
			st.Failures += n
		}
	}
	return st
}
