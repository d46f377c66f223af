package bench

import (
	"container/heap"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/bench/backend"
	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	_ "github.com/fairway-lb/fairway/client/strategy/all" // registers the built-in strategies
	"github.com/fairway-lb/fairway/loadreport"
)

// The simulation runs the same arrival schedule against simulated pods: each
// serves Capacity requests at once in FIFO order with the service times of
// backend.ServiceTime and the same faults as the real pods. fairway,
// fairway_p2c and load_aware run the real strategy chains on a fake clock through a
// strategy.Pool per client channel, the code the Fairway balancer runs:
// the same endpoint sets, latency sampling and failure penalty, and a
// request's outcome reaches the endpoint through the done function its pick
// returned (see TestSim_RunsTheBalancersCode). connection, round_robin and
// grpc_least_request (two choices, the channel's own in-flight counts;
// outlier detection is not simulated) are implemented here, grpc_wrr in
// simwrr.go and oracle in simoracle.go. Every pod computes its ORCA load
// reports with the loadreport.Reporter the real pods run (a request counts
// from its arrival at the pod to its end there), and its antagonist
// slowdowns multiply the service times of requests starting in them; the
// Fairway chains get the reports as the balancer does (simload.go). Membership
// changes reach every client at once, and a listed pod is connected at
// once. A request's latency, as reported, is its time at the pod plus
// SimRTT; the strategies' samples, read on the fake clock, leave SimRTT
// out (a constant that shifts every endpoint's estimate alike).

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
	lost    bool      // the pod crashed while holding it
	atPod   time.Time // when the pod's load report counted it in
	// onDone is the done function of a Fairway pick; nil otherwise.
	onDone func(balancer.DoneInfo)
}

type simPod struct {
	spec     backend.Spec
	live     bool
	started  time.Duration
	busy     int
	queue    []*simReq
	received int64
	buckets  []int64
	// load is the pod's ORCA reporting, on the simulation's clock; inflight
	// is its requests in flight (queued or served), as load counts them.
	load     *loadreport.Reporter
	inflight int
}

type simChannel struct {
	zone string
	rng  *rand.Rand
	// fairway strategies
	fw *fairwayChannel
	// connection
	pinned int
	// round_robin
	rr int
	// grpc_least_request
	inflight []int
	// grpc_wrr
	wrr *wrrChannel
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
	podAddrs []string       // by pod index
	podIndex map[string]int // pod index by address
	live     []int          // serving pods, recomputed on join and crash
	// callers is what the control plane publishes as the Cluster's caller
	// zones: the channels' shares per zone (each channel is one client).
	callers map[string]float64
	loads   loadReports // server-reported load (simload.go)
}

func simulate(cfg Config, strat string, sched []arrival, zones []string, run time.Duration) (*Result, error) {
	s := &sim{
		cfg: cfg, strategy: strat, run: run, bucket: cfg.bucket(),
		epoch: time.Unix(1_700_000_000, 0),
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x51)),
		rec:   newRecorder(len(cfg.Pods)),
		epPod: map[*strategy.Endpoint]int{}, podIndex: map[string]int{},
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
	s.addPods()
	s.addChannels(zones)
	start := time.Now()
	cpu0 := cpuTime()
	s.loop(sched)
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

// addPods creates the simulated pods and schedules their joins and crashes.
func (s *sim) addPods() {
	nb := int(s.run/s.bucket) + 2
	slow := s.cfg.Antagonist.slowdowns(s.cfg.Seed, len(s.cfg.Pods), s.run)
	for i, p := range s.cfg.Pods {
		sp := &simPod{
			spec: backend.Spec{Index: i, Zone: p.Zone, Capacity: max(p.Capacity, 1), Median: s.cfg.Median, Sigma: s.cfg.Sigma,
				SlowFactor: p.SlowFactor, ErrorRate: p.ErrorRate, ColdFactor: p.ColdFactor, ColdFor: time.Duration(p.ColdFor * float64(s.run))},
			buckets: make([]int64, nb),
			load:    loadreport.New(loadreport.WithCapacity(max(p.Capacity, 1)), loadreport.WithClock(s.clock)),
		}
		if slow != nil {
			sp.spec.Slowdowns = slow[i]
		}
		if sp.spec.SlowFactor <= 0 {
			sp.spec.SlowFactor = 1
		}
		if sp.spec.ColdFactor <= 0 {
			sp.spec.ColdFactor = 1
		}
		sp.live = p.JoinAt <= 0
		s.pods = append(s.pods, sp)
		s.podAddrs = append(s.podAddrs, simPodAddr(i))
		s.podIndex[simPodAddr(i)] = i
		if p.JoinAt > 0 {
			s.push(event{at: time.Duration(p.JoinAt * float64(s.run)), kind: evJoin, pod: i})
		}
		if p.CrashAt > 0 {
			s.push(event{at: time.Duration(p.CrashAt * float64(s.run)), kind: evCrash, pod: i})
		}
	}
	s.updateLive()
}

// addChannels creates one client channel per zone entry; with a Fairway
// chain, each gets its own Pool over the live pods, and ticks start.
func (s *sim) addChannels(zones []string) {
	for i, z := range zones {
		ch := &simChannel{zone: z, rng: rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)+1)), pinned: -1}
		ch.rr = ch.rng.IntN(max(len(s.cfg.Pods), 1))
		ch.inflight = make([]int, len(s.cfg.Pods))
		if s.chain != nil {
			ch.fw = newFairwayChannel(s.chain, s.clock, ch.rng.Uint64, s.prober(), z, s.callers)
			s.setMembers(ch)
		}
		if s.strategy == GRPCWRR {
			ch.wrr = s.newWRRChannel(ch)
		}
		s.chans = append(s.chans, ch)
	}
	if s.chain != nil || s.strategy == GRPCWRR {
		s.push(event{at: simTick, kind: evTick})
		s.startOOB()
	}
}

// loop runs the arrivals of sched and the events until both are exhausted.
func (s *sim) loop(sched []arrival) {
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
		if (ev.kind == evTick || ev.kind == evOOB) && next >= len(sched) {
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
		case evProbe:
			s.probeDone()
		case evOOB:
			s.oob()
		}
	}
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

// members is the membership every channel's resolver reports: the live
// pods, in pod order.
func (s *sim) members() []strategy.Member {
	out := make([]strategy.Member, 0, len(s.live))
	for _, p := range s.live {
		sp := s.pods[p]
		out = append(out, strategy.Member{Addr: s.podAddrs[p], Info: endpointattr.Info{
			Zone: sp.spec.Zone, Hostname: "pod-" + strconv.Itoa(p), Weight: uint32(sp.spec.Capacity),
			Health: endpointattr.Healthy, FirstSeen: s.epoch.Add(sp.started),
		}})
	}
	return out
}

// setMembers gives channel ch the current membership, as a resolver update
// does, and keeps epPod in step.
func (s *sim) setMembers(ch *simChannel) {
	added, removed := ch.fw.setMembers(s.members())
	for _, e := range removed {
		delete(s.epPod, e)
	}
	for _, e := range added {
		s.epPod[e] = s.podIndex[e.Addr]
	}
}

// simPodAddr is the address of simulated pod p's endpoint.
func simPodAddr(p int) string { return podIP(p) + ":8080" }

// fairwayChannel is one simulated client channel's Fairway balancer: a
// strategy.Pool driven as client/balancer drives it, except that a
// simulated pod is reachable as soon as it is listed (a balancer's SubConn
// turns READY, and the pool is told so, shortly after).
type fairwayChannel struct {
	pool    *strategy.Pool
	picker  strategy.PoolPicker
	zone    string
	callers map[string]float64
}

func newFairwayChannel(c *strategy.Chain, clk clock.Clock, rnd func() uint64, probe func(*strategy.Endpoint), zone string, callers map[string]float64) *fairwayChannel {
	f := &fairwayChannel{pool: strategy.NewPool(strategy.BuildOptions{Clock: clk, Rand: rnd, Probe: probe}), zone: zone, callers: callers}
	f.pool.SetChain(c)
	return f
}

// setMembers updates the pool's membership, marks new endpoints connected
// and rebuilds the picker.
func (f *fairwayChannel) setMembers(members []strategy.Member) (added, removed []*strategy.Endpoint) {
	added, removed = f.pool.Update(members, f.zone, f.callers)
	for _, e := range added {
		f.pool.SetConnected(e, true)
	}
	f.rebuild()
	return added, removed
}

func (f *fairwayChannel) rebuild() { f.picker, _, _ = f.pool.Build() }

// tick runs the pool's Tick and rebuilds the picker when asked to.
func (f *fairwayChannel) tick() {
	if f.pool.Tick() {
		f.rebuild()
	}
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

// pick chooses the pod for a request of channel ch; -1 when none. A
// Fairway pick also returns the request's done function.
func (s *sim) pick(ch *simChannel) (int, func(balancer.DoneInfo)) {
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
	case GRPCWRR:
		return ch.wrr.pick(), nil
	case Oracle:
		return s.pickOracle(ch), nil
	default:
		e, done, err := ch.fw.picker.Pick(context.Background())
		if err != nil {
			return -1, nil
		}
		return s.epPod[e], done
	}
}

func (s *sim) arrive(c int) {
	ch := s.chans[c]
	p, done := s.pick(ch)
	r := &simReq{ch: c, pod: p, arrive: s.now, onDone: done}
	if p < 0 {
		s.finish(r, codes.Unavailable)
		return
	}
	ch.inflight[p]++
	pod := s.pods[p]
	pod.received++
	pod.inflight++
	r.atPod = pod.load.Begin()
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
	if len(pod.spec.Slowdowns) > 0 {
		d = time.Duration(float64(d) * pod.spec.SlowdownAt(s.now))
	}
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
		sp := s.pods[r.pod]
		sp.inflight--
		sp.load.End(r.atPod, err)
		if w := s.chans[r.ch].wrr; w != nil && pod >= 0 {
			w.report(pod, sp.load.Load(), s.now) // the response's trailer
		}
	}
	s.reportDone(r, err, pod >= 0)
}

// report tells a channel's balancer how a Fairway request ended, as gRPC
// does: through the done function of its pick (nil for other strategies).
// The latency sample and the failure penalty are the pool's. The
// simulator's requests end through reportDone (simload.go), which adds the
// pod's load report.
func report(done func(balancer.DoneInfo), err error) {
	if done != nil {
		done(balancer.DoneInfo{Err: err})
	}
}

func (s *sim) tick() {
	for _, ch := range s.chans {
		if ch.fw != nil {
			ch.fw.tick()
		}
		if ch.wrr != nil {
			ch.wrr.tick(s.now)
		}
	}
}

// membersChanged tells every channel's balancer the new membership.
func (s *sim) membersChanged() {
	for _, ch := range s.chans {
		if ch.fw != nil {
			s.setMembers(ch)
		}
		if ch.wrr != nil {
			ch.wrr.newPicker(s, ch)
		}
	}
}

func (s *sim) join(p int) {
	pod := s.pods[p]
	pod.live, pod.started = true, s.now
	s.updateLive()
	s.membersChanged()
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
	s.membersChanged()
}
