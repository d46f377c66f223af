package cpbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// change is one single-endpoint change in flight or done.
type change struct {
	// immutable once registered
	seq     int
	service int
	name    string // xDS resource name
	kind    string // "ready" or "address"
	addr    string // the changed endpoint's address after the change
	health  corepb.HealthStatus
	subs    int // subscribed streams
	started time.Time

	// guarded by tracker.mu
	returned time.Time // when the Update call returned
	obs      map[int]observation
	missed   bool
}

// observation is the first response in which a stream saw a change.
type observation struct {
	at        time.Time
	delta     bool
	bytes     int
	resources int
}

// tracker matches received ClusterLoadAssignments to changes in flight.
// Stream readers call observe; the goroutine running Run registers and
// expires changes.
type tracker struct {
	counting atomic.Bool // true during the change phase: streams count what they receive

	mu        sync.Mutex
	pending   map[string]*change // guarded by mu; by resource name, at most one per service
	completed chan *change       // a change every subscriber has seen; buffered for every change
}

func newTracker(changes int) *tracker {
	return &tracker{pending: make(map[string]*change), completed: make(chan *change, changes)}
}

// register starts tracking ch before its write is sent.
func (t *tracker) register(ch *change) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch.obs = make(map[int]observation, ch.subs)
	t.pending[ch.name] = ch
}

// wrote records when ch's write returned.
func (t *tracker) wrote(ch *change, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch.returned = at
}

// expire gives up on pending changes written before deadline; it returns
// them.
func (t *tracker) expire(deadline time.Time) []*change {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*change
	for name, ch := range t.pending {
		if !ch.returned.IsZero() && ch.returned.Before(deadline) {
			ch.missed = true
			delete(t.pending, name)
			out = append(out, ch)
		}
	}
	return out
}

// inFlight is the number of changes not yet seen by all their subscribers.
func (t *tracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// observe records that stream id received clas at at, in a response of
// size bytes. Called from the stream's reader goroutine.
func (t *tracker) observe(id int, delta bool, at time.Time, size int, clas []*endpointpb.ClusterLoadAssignment) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, cla := range clas {
		ch := t.pending[cla.GetClusterName()]
		if ch == nil {
			continue
		}
		if _, seen := ch.obs[id]; seen || !reflects(cla, ch) {
			continue
		}
		ch.obs[id] = observation{at: at, delta: delta, bytes: size, resources: len(clas)}
		if len(ch.obs) == ch.subs {
			delete(t.pending, ch.name)
			t.completed <- ch
		}
	}
}

// reflects reports whether cla holds ch's endpoint with ch's health.
func reflects(cla *endpointpb.ClusterLoadAssignment, ch *change) bool {
	for _, loc := range cla.GetEndpoints() {
		for _, lbe := range loc.GetLbEndpoints() {
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() == ch.addr && lbe.GetHealthStatus() == ch.health {
				return true
			}
		}
	}
	return false
}

// stream is one raw ADS stream subscribed by name to some services'
// ClusterLoadAssignments.
type stream struct {
	// immutable
	id       int
	delta    bool
	services []int
	names    []string
	ready    chan struct{} // closed when every subscribed name has been received

	// Delta streams only, owned by the reader: the version last received
	// per name, and the CLAs (name → version) of the previous response.
	versions map[string]string
	prev     map[string]string

	mu        sync.Mutex
	responses int            // guarded by mu: responses received while counting
	resources int            // guarded by mu: resources received while counting
	bytes     int64          // guarded by mu: proto.Size of the responses received while counting
	perName   map[string]int // guarded by mu: new versions (SotW: resources) received per name while counting
	resent    int            // guarded by mu: delta CLAs repeating the previous response, while counting
	repeated  int            // guarded by mu: other delta CLAs at the version the stream had, while counting
}

// layout assigns services to streams: each stream takes between min and max
// consecutive services (round robin over all services), and left-over
// services go to streams in turn, so that every service has a subscriber.
// A deltaFraction share of the streams, spread evenly, use delta xDS.
func layout(cfg Config, rng *rand.Rand) []*stream {
	streams := make([]*stream, cfg.Streams)
	cursor := 0
	for i := range streams {
		n := min(cfg.MinSubscriptions+rng.IntN(cfg.MaxSubscriptions-cfg.MinSubscriptions+1), cfg.Services)
		s := &stream{
			id:      i,
			delta:   int(float64(i+1)*cfg.DeltaFraction) > int(float64(i)*cfg.DeltaFraction),
			ready:   make(chan struct{}),
			perName: make(map[string]int),
		}
		if s.delta {
			s.versions, s.prev = make(map[string]string), make(map[string]string)
		}
		for range n {
			s.services = append(s.services, cursor%cfg.Services)
			cursor++
		}
		streams[i] = s
	}
	for ; cursor < cfg.Services; cursor++ {
		s := streams[cursor%len(streams)]
		s.services = append(s.services, cursor)
	}
	for _, s := range streams {
		for _, svc := range s.services {
			s.names = append(s.names, resourceName(cfg.Namespace, svc))
		}
	}
	return streams
}

// run subscribes and reads until ctx is done; it returns nil then.
func (s *stream) run(ctx context.Context, conn *grpc.ClientConn, t *tracker) error {
	client := discoverypb.NewAggregatedDiscoveryServiceClient(conn)
	node := &corepb.Node{Id: "cpbench-" + strconv.Itoa(s.id), Cluster: "cpbench"}
	var err error
	if s.delta {
		err = s.runDelta(ctx, client, node, t)
	} else {
		err = s.runSotW(ctx, client, node, t)
	}
	if ctx.Err() != nil && (status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fairway/cpbench: stream %d: %w", s.id, err)
	}
	return nil
}

func (s *stream) runSotW(ctx context.Context, client discoverypb.AggregatedDiscoveryServiceClient, node *corepb.Node, t *tracker) error {
	st, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: s.names}); err != nil {
		return err
	}
	seen := make(map[string]bool, len(s.names))
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		at := time.Now()
		clas, err := decode(resp.GetResources())
		if err != nil {
			return err
		}
		s.received(t, at, proto.Size(resp), clas, seen, nil)
		if err := st.Send(&discoverypb.DiscoveryRequest{
			TypeUrl:       resourcev3.EndpointType,
			ResourceNames: s.names,
			VersionInfo:   resp.GetVersionInfo(),
			ResponseNonce: resp.GetNonce(),
		}); err != nil {
			return err
		}
	}
}

func (s *stream) runDelta(ctx context.Context, client discoverypb.AggregatedDiscoveryServiceClient, node *corepb.Node, t *tracker) error {
	st, err := client.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discoverypb.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: s.names}); err != nil {
		return err
	}
	seen := make(map[string]bool, len(s.names))
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		at := time.Now()
		anys := make([]*anypb.Any, 0, len(resp.GetResources()))
		for _, r := range resp.GetResources() {
			anys = append(anys, r.GetResource())
		}
		clas, err := decode(anys)
		if err != nil {
			return err
		}
		s.received(t, at, proto.Size(resp), clas, seen, s.classify(resp.GetResources()))
		if err := st.Send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
	}
}

// claKind is what a delta stream already had of a CLA it receives.
type claKind int

const (
	newVersion claKind = iota // a version the stream did not have
	// resent: the version the stream had, received in its previous response
	// too. go-control-plane's delta server sends a response twice when the
	// cache update that produced it races with a request of the stream (an
	// ACK): the update answers the watch the request is replacing, and the
	// replacement watch, computed from the versions the stream had before
	// that response, answers the same again.
	resent
	repeated // the version the stream had, not in its previous response
)

// classify tells, for each resource of a delta response, what the stream
// already had of it, and remembers the response. Called by the reader.
func (s *stream) classify(resources []*discoverypb.Resource) []claKind {
	kinds := make([]claKind, 0, len(resources))
	cur := make(map[string]string, len(resources))
	for _, r := range resources {
		if r.GetResource() == nil {
			continue // decode skips it too
		}
		name, version := r.GetName(), r.GetVersion()
		switch v, had := s.versions[name]; {
		case !had || v != version:
			kinds = append(kinds, newVersion)
		case s.prev[name] == version:
			kinds = append(kinds, resent)
		default:
			kinds = append(kinds, repeated)
		}
		s.versions[name] = version
		cur[name] = version
	}
	s.prev = cur
	return kinds
}

// received accounts for one response; seen is owned by the reader. kinds
// classifies a delta response's CLAs (nil for SotW: all count as new).
func (s *stream) received(t *tracker, at time.Time, size int, clas []*endpointpb.ClusterLoadAssignment, seen map[string]bool, kinds []claKind) {
	if len(seen) < len(s.names) {
		for _, cla := range clas {
			seen[cla.GetClusterName()] = true
		}
		if len(seen) == len(s.names) {
			close(s.ready)
		}
	}
	if t.counting.Load() {
		s.mu.Lock()
		s.responses++
		s.resources += len(clas)
		s.bytes += int64(size)
		for i, cla := range clas {
			switch {
			case kinds == nil || kinds[i] == newVersion:
				s.perName[cla.GetClusterName()]++
			case kinds[i] == resent:
				s.resent++
			default:
				s.repeated++
			}
		}
		s.mu.Unlock()
	}
	t.observe(s.id, s.delta, at, size, clas)
}

func decode(anys []*anypb.Any) ([]*endpointpb.ClusterLoadAssignment, error) {
	clas := make([]*endpointpb.ClusterLoadAssignment, 0, len(anys))
	for _, a := range anys {
		if a == nil {
			continue
		}
		cla := &endpointpb.ClusterLoadAssignment{}
		if err := a.UnmarshalTo(cla); err != nil {
			return nil, fmt.Errorf("decode ClusterLoadAssignment: %w", err)
		}
		clas = append(clas, cla)
	}
	return clas, nil
}
