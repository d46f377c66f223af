package bench

import (
	"container/heap"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/bench/backend"
	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	_ "github.com/fairway-lb/fairway/client/strategy/all" // registers the built-in strategies
)

// The simulation runs the same arrival schedule against simulated pods: each
// serves Capacity requests at once in FIFO order with the service times of
// backend.ServiceTime and the same faults as the real pods. fairway and
// fairway_p2c run the real strategy chains of client/strategy through their
// public interface (Build, Pick, Tick, Endpoint counters) on a fake clock,
// one chain per client channel, as the Fairway balancer drives them.
// connection, round_robin and grpc_least_request (two choices, the
// channel's own in-flight counts; outlier detection is not simulated) are
// implemented here. Membership changes reach every client at once. A
// request's latency is its time at the pod plus SimRTT.

// SimRTT is the network and gRPC overhead the simulation adds to every
// request's latency.
const SimRTT = 300 * time.Microsecond

// simTick is how often the strategies' Tick runs (the balancer's default).
const simTick = 100 * time.Millisecond

// strategyChains are the Fairway strategies' chains.
var strategyChains = map[string]string{
	FairwayP2C: `[{"p2c":{}}]`,
	Fairway:    "", // the default composition
}

// chainFor is the chain strategy s runs with under cfg; ok is false for the
// strategies that are not Fairway chains.
func chainFor(cfg Config, s string) (chain string, ok bool) {
	chain, ok = strategyChains[s]
	if s == Fairway && cfg.FairwayChain != "" {
		chain = cfg.FairwayChain
	}
	return chain, ok
}

type evKind uint8

const (
	evComplete evKind = iota
	evDeadline
	evTick
	evJoin
	evCrash
)

type event struct {
	at   time.Duration
	seq  uint64
	kind evKind
	req  *simReq
	pod  int
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type simReq struct {
	ch, pod int
	arrive  time.Duration
	serving bool
	done    bool
	lost    bool // the pod crashed while holding it
	ep      *strategy.Endpoint
}

type simPod struct {
	spec     backend.Spec
	live     bool
	started  time.Duration
	busy     int
	queue    []*simReq
	received int64
	buckets  []int64
}

type simChannel struct {
	zone string
	rng  *rand.Rand
	// fairway strategies
	eps    []*strategy.Endpoint // by pod index; nil when not known
	strat  strategy.Strategy
	opts   strategy.BuildOptions
	picker strategy.Picker
	cands  []strategy.Candidate // current endpoints, rebuilt on membership changes
	all    []*strategy.Endpoint
	// connection
	pinned int
	// round_robin
	rr int
	// grpc_least_request
	inflight []int
}

type sim struct {
	cfg      Config
	strategy string
	run      time.Duration
	bucket   time.Duration
	epoch    time.Time
	clock    *testingclock.FakeClock
	now      time.Duration
	seq      uint64
	events   eventHeap
	pods     []*simPod
	chans    []*simChannel
	rng      *rand.Rand
	rec      *recorder
	chain    *strategy.Chain
	failures map[codes.Code]error
	epPod    map[*strategy.Endpoint]int
	live     []int // serving pods, recomputed on join and crash
	// callers is what the control plane publishes as the Cluster's caller
	// zones: the channels' shares per zone (each channel is one client).
	callers map[string]float64
}

func simulate(cfg Config, strat string, sched []arrival, zones []string, run time.Duration) (*Result, error) {
	s := &sim{
		cfg: cfg, strategy: strat, run: run, bucket: cfg.bucket(),
		epoch: time.Unix(1_700_000_000, 0),
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x51)),
		rec:   newRecorder(len(cfg.Pods)),
		epPod: map[*strategy.Endpoint]int{},
		failures: map[codes.Code]error{
			codes.Unavailable:      status.Error(codes.Unavailable, "unavailable"),
			codes.DeadlineExceeded: status.Error(codes.DeadlineExceeded, "deadline exceeded"),
		},
	}
	s.clock = testingclock.NewFakeClock(s.epoch)
	s.callers = callerZones(zones)
	if chain, ok := chainFor(cfg, strat); ok {
		var raw json.RawMessage
		if chain != "" {
			raw = json.RawMessage(chain)
		}
		c, err := strategy.ParseChain(raw)
		if err != nil {
			return nil, err
		}
		s.chain = c
	}
	nb := int(run/s.bucket) + 2
	for i, p := range cfg.Pods {
		sp := &simPod{
			spec: backend.Spec{Index: i, Zone: p.Zone, Capacity: max(p.Capacity, 1), Median: cfg.Median, Sigma: cfg.Sigma,
				SlowFactor: p.SlowFactor, ErrorRate: p.ErrorRate, ColdFactor: p.ColdFactor, ColdFor: time.Duration(p.ColdFor * float64(run))},
			buckets: make([]int64, nb),
		}
		if sp.spec.SlowFactor <= 0 {
			sp.spec.SlowFactor = 1
		}
		if sp.spec.ColdFactor <= 0 {
			sp.spec.ColdFactor = 1
		}
		sp.live = p.JoinAt <= 0
		s.pods = append(s.pods, sp)
		if p.JoinAt > 0 {
			s.push(event{at: time.Duration(p.JoinAt * float64(run)), kind: evJoin, pod: i})
		}
		if p.CrashAt > 0 {
			s.push(event{at: time.Duration(p.CrashAt * float64(run)), kind: evCrash, pod: i})
		}
	}
	s.updateLive()
	for i, z := range zones {
		ch := &simChannel{zone: z, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)), pinned: -1}
		ch.rr = ch.rng.IntN(max(len(cfg.Pods), 1))
		ch.inflight = make([]int, len(cfg.Pods))
		if s.chain != nil {
			ch.strat, ch.opts = s.chain.Build(strategy.BuildOptions{Clock: s.clock, Rand: ch.rng.Uint64})
			ch.eps = make([]*strategy.Endpoint, len(cfg.Pods))
			for p, sp := range s.pods {
				if sp.live {
					ch.eps[p] = s.newEndpoint(p, true)
				}
			}
			s.rebuild(ch)
		}
		s.chans = append(s.chans, ch)
	}
	if s.chain != nil {
		s.push(event{at: simTick, kind: evTick})
	}

	start := time.Now()
	cpu0 := cpuTime()
	next := 0
	for next < len(sched) || len(s.events) > 0 {
		if next < len(sched) && (len(s.events) == 0 || sched[next].at <= s.events[0].at) {
			a := sched[next]
			next++
			s.advance(a.at)
			s.arrive(int(a.ch))
			continue
		}
		ev := heap.Pop(&s.events).(event)
		if ev.kind == evTick && next >= len(sched) {
			continue // nothing left to send: stop ticking
		}
		s.advance(ev.at)
		switch ev.kind {
		case evComplete:
			s.complete(ev.req)
		case evDeadline:
			s.deadline(ev.req)
		case evTick:
			s.tick()
			s.push(event{at: s.now + simTick, kind: evTick})
		case evJoin:
			s.join(ev.pod)
		case evCrash:
			s.crash(ev.pod)
		}
	}
	res := &Result{
		Strategy:     strat,
		TargetRate:   cfg.Rate,
		AchievedRate: float64(len(sched)) / run.Seconds(),
		Wall:         time.Since(start),
		CPU:          cpuTime() - cpu0,
	}
	received := make([]int64, len(s.pods))
	buckets := make([][]int64, len(s.pods))
	for i, p := range s.pods {
		received[i], buckets[i] = p.received, p.buckets
	}
	res.fill(s.rec, received, buckets, int64(len(sched)), fairWeights(cfg.Pods))
	return res, nil
}

func (s *sim) push(e event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.events, e)
}

func (s *sim) advance(t time.Duration) {
	if t > s.now {
		s.now = t
		s.clock.SetTime(s.epoch.Add(t))
	}
}

func (s *sim) newEndpoint(p int, initial bool) *strategy.Endpoint {
	sp := s.pods[p]
	now := s.epoch.Add(s.now)
	e := strategy.NewEndpoint(podIP(p)+":8080", endpointattr.Info{
		Zone: sp.spec.Zone, Hostname: "pod-" + strconv.Itoa(p), Weight: uint32(sp.spec.Capacity),
		Health: endpointattr.Healthy, FirstSeen: now,
	}, now)
	e.Initial = initial
	s.epPod[e] = p
	return e
}

// rebuild gives a channel's chain the current endpoint set, as the balancer
// does on every resolver update.
func (s *sim) rebuild(ch *simChannel) {
	ch.cands, ch.all = nil, nil
	for _, e := range ch.eps {
		if e != nil {
			ch.all = append(ch.all, e)
			ch.cands = append(ch.cands, strategy.Candidate{E: e, Weight: float64(e.Info.Weight)})
		}
	}
	ch.picker = ch.strat.Build(s.set(ch))
}

// set is the channel's current endpoint set; Build may keep its slices,
// which are replaced (never modified) on the next membership change.
func (s *sim) set(ch *simChannel) strategy.Set {
	return strategy.Set{Cands: ch.cands, All: ch.all, LocalZone: ch.zone, CallerZones: s.callers, Now: s.epoch.Add(s.now)}
}

// callerZones is the share of channels per zone, rounded as the control
// plane rounds the caller_zones it publishes.
func callerZones(zones []string) map[string]float64 {
	if len(zones) == 0 {
		return nil
	}
	n := map[string]int{}
	for _, z := range zones {
		n[z]++
	}
	out := make(map[string]float64, len(n))
	for z, c := range n {
		out[z] = math.Round(1000*float64(c)/float64(len(zones))) / 1000
	}
	return out
}

func (s *sim) livePods() []int { return s.live }

func (s *sim) updateLive() {
	s.live = s.live[:0:0]
	for i, p := range s.pods {
		if p.live {
			s.live = append(s.live, i)
		}
	}
}

// pick chooses the pod for a request of channel ch; -1 when none.
func (s *sim) pick(ch *simChannel) (int, *strategy.Endpoint) {
	switch s.strategy {
	case Connection:
		if ch.pinned < 0 || !s.pods[ch.pinned].live {
			live := s.livePods()
			if len(live) == 0 {
				return -1, nil
			}
			ch.pinned = live[s.rng.IntN(len(live))]
		}
		return ch.pinned, nil
	case RoundRobin:
		live := s.livePods()
		if len(live) == 0 {
			return -1, nil
		}
		ch.rr++
		return live[ch.rr%len(live)], nil
	case GRPCLeastRequest:
		live := s.livePods()
		switch len(live) {
		case 0:
			return -1, nil
		case 1:
			return live[0], nil
		}
		a := ch.rng.IntN(len(live))
		b := ch.rng.IntN(len(live) - 1)
		if b >= a {
			b++
		}
		pa, pb := live[a], live[b]
		if ch.inflight[pb] < ch.inflight[pa] {
			return pb, nil
		}
		return pa, nil
	default:
		e, err := ch.picker.Pick(context.Background())
		if err != nil {
			return -1, nil
		}
		e.Picked()
		return s.epPod[e], e
	}
}

func (s *sim) arrive(c int) {
	ch := s.chans[c]
	p, ep := s.pick(ch)
	r := &simReq{ch: c, pod: p, arrive: s.now, ep: ep}
	if p < 0 {
		s.finish(r, codes.Unavailable)
		return
	}
	ch.inflight[p]++
	pod := s.pods[p]
	pod.received++
	if b := int(s.now / s.bucket); b < len(pod.buckets) {
		pod.buckets[b]++
	}
	if pod.spec.ErrorRate > 0 && s.rng.Float64() < pod.spec.ErrorRate {
		s.finish(r, codes.Unavailable)
		return
	}
	s.push(event{at: s.now + s.cfg.Deadline, kind: evDeadline, req: r})
	if pod.busy < pod.spec.Capacity {
		s.serve(pod, r)
	} else {
		pod.queue = append(pod.queue, r)
	}
}

func (s *sim) serve(pod *simPod, r *simReq) {
	pod.busy++
	r.serving = true
	d := backend.ServiceTime(pod.spec, s.now-pod.started, s.rng)
	s.push(event{at: s.now + d, kind: evComplete, req: r})
}

// release frees a slot of pod and starts its next queued request.
func (s *sim) release(pod *simPod) {
	pod.busy--
	for len(pod.queue) > 0 && pod.busy < pod.spec.Capacity {
		r := pod.queue[0]
		pod.queue = pod.queue[1:]
		if !r.done {
			s.serve(pod, r)
		}
	}
}

func (s *sim) complete(r *simReq) {
	if r.done {
		return
	}
	s.finish(r, codes.OK)
	s.release(s.pods[r.pod])
}

func (s *sim) deadline(r *simReq) {
	if r.done {
		return
	}
	s.finish(r, codes.DeadlineExceeded)
	if r.serving {
		s.release(s.pods[r.pod])
	}
}

func (s *sim) finish(r *simReq, c codes.Code) {
	r.done = true
	lat := s.now - r.arrive + SimRTT
	var err error
	if c != codes.OK {
		err = s.failures[c]
	}
	pod := r.pod
	if c == codes.DeadlineExceeded || r.lost {
		pod = -1 // the client never hears back from the pod
	}
	cross := r.pod >= 0 && s.pods[r.pod].spec.Zone != s.chans[r.ch].zone
	s.rec.record(lat, err, pod, cross)
	if r.pod >= 0 {
		s.chans[r.ch].inflight[r.pod]--
	}
	if e := r.ep; e != nil {
		if s.chain.Needs.LatencyAlpha > 0 {
			d := lat
			if err != nil {
				d = max(d, time.Duration(float64(e.Latency())*max(s.chain.Needs.FailurePenalty, 1)))
			}
			e.ObserveLatency(d, s.chain.Needs.LatencyAlpha)
		}
		e.Finish(c)
	}
}

func (s *sim) tick() {
	for _, ch := range s.chans {
		if ch.strat.Tick(s.set(ch)) {
			s.rebuild(ch)
		}
	}
}

func (s *sim) join(p int) {
	pod := s.pods[p]
	pod.live, pod.started = true, s.now
	s.updateLive()
	if s.chain == nil {
		return
	}
	for _, ch := range s.chans {
		ch.eps[p] = s.newEndpoint(p, false)
		s.rebuild(ch)
	}
}

func (s *sim) crash(p int) {
	pod := s.pods[p]
	pod.live = false
	s.updateLive()
	pod.busy = 0
	q := pod.queue
	pod.queue = nil
	for _, r := range q {
		if !r.done {
			r.lost = true
			s.finish(r, codes.Unavailable)
		}
	}
	// Requests in service fail too: their completion events find them done.
	for i := range s.events {
		if r := s.events[i].req; r != nil && r.pod == p && !r.done && s.events[i].kind == evComplete {
			r.lost = true
			s.finish(r, codes.Unavailable)
		}
	}
	if s.chain == nil {
		return
	}
	for _, ch := range s.chans {
		delete(s.epPod, ch.eps[p])
		ch.eps[p] = nil
		s.rebuild(ch)
	}
}
