package xdsserver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/translate"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// nackQuiet is how long a stream that NACKed must get nothing.
const nackQuiet = 3 * time.Second

// prompt bounds how long a change takes to reach a stream.
const prompt = 2 * time.Second

// lockedBuffer is a bytes.Buffer safe for a logger's writes and the test's
// reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count is the number of lines holding every one of parts.
func (b *lockedBuffer) count(parts ...string) int { return len(b.matching(parts)) }

// lines is the lines holding every one of parts.
func (b *lockedBuffer) lines(parts ...string) string { return strings.Join(b.matching(parts), "\n") }

func (b *lockedBuffer) matching(parts []string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for line := range strings.SplitSeq(b.buf.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// startNACKServer is startServer with its log also kept in the returned
// buffer, once it has pushed the returned snapshot of services a and b.
func startNACKServer(ctx context.Context, t *testing.T) (*testServer, *lockedBuffer, *topology.Snapshot) {
	t.Helper()
	log := &lockedBuffer{}
	s := startServer(t, xdsserver.WithLogger(slog.New(slog.NewTextHandler(io.MultiWriter(log, t.Output()), nil))))
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1"), service("b", "10.0.0.2")})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)
	return s, log, snap
}

// responses forwards what recv returns to the channel it returns until recv
// fails (the stream ends with ctx) or ctx ends.
func responses[R any](ctx context.Context, recv func() (R, error)) <-chan R {
	ch := make(chan R)
	go func() {
		defer close(ch)
		for {
			r, err := recv()
			if err != nil {
				return
			}
			select {
			case ch <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// quietUntil fails the test when ch yields a response before deadline.
func quietUntil[R any](t *testing.T, ch <-chan R, deadline time.Time, what string) {
	t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the stream ended", what)
		}
		t.Errorf("%s: got a response within %v after the NACK, want none: %v", what, nackQuiet, r)
	case <-timer.C:
	}
}

// within receives the next response from ch within prompt.
func within[R comparable](t *testing.T, ch <-chan R, what string) R {
	t.Helper()
	var zero R
	r := testkit.RecvWithin(t, ch, prompt, what)
	if r == zero {
		t.Fatalf("%s: the stream ended", what)
	}
	return r
}

func nackDetail(msg string) *statuspb.Status { return &statuspb.Status{Code: 3, Message: msg} }

// roundRobin is svc with the round_robin policy (its Cluster changes).
func roundRobin(svc *topology.Service) *topology.Service {
	svc.Policy = topology.Policy{LB: topology.RoundRobin}
	return svc
}

// wantClusters checks that got holds exactly the Clusters of svcs.
func wantClusters(t *testing.T, got map[string]*clusterpb.Cluster, svcs ...*topology.Service) {
	t.Helper()
	want := map[string]*clusterpb.Cluster{}
	for _, svc := range svcs {
		want[svc.Key.ResourceName()] = translate.Cluster(svc)
	}
	if diff := cmp.Diff(got, want, protocmp.Transform()); diff != "" {
		t.Errorf("Clusters (-got +want):\n%s", diff)
	}
}

// TestServer_SotWNACKGetsNothingUntilChange: a SotW stream that NACKs its
// first Cluster, and one that NACKs an assignment after ACKing an earlier
// one, get nothing until what they rejected changes, then the new version
// at once; a stream that ACKs gets every version; each rejected response
// counts and logs once.
func TestServer_SotWNACKGetsNothingUntilChange(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, log, snap := startNACKServer(ctx, t)

	names := []string{"a.default:8080"}
	open := func(typeURL, id string) (*sotwADS, <-chan *discoverypb.DiscoveryResponse) {
		a := newSotWADS(ctx, t, s.addr)
		a.send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: id}, TypeUrl: typeURL, ResourceNames: names})
		return a, responses(ctx, a.stream.Recv)
	}
	nacker, nackerResps := open(resourcev3.ClusterType, "picky")
	acker, ackerResps := open(resourcev3.ClusterType, "happy")
	eds, edsResps := open(resourcev3.EndpointType, "picky-eds")
	ack := func(a *sotwADS, typeURL string, r *discoverypb.DiscoveryResponse) {
		a.send(&discoverypb.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	}
	nack := func(a *sotwADS, typeURL, accepted string, r *discoverypb.DiscoveryResponse) {
		a.send(&discoverypb.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names, VersionInfo: accepted,
			ResponseNonce: r.GetNonce(), ErrorDetail: nackDetail("bad " + r.GetVersionInfo())})
	}

	// The first Cluster: rejected by nacker (which accepted nothing, and
	// says so twice), accepted by acker. The first assignment: accepted.
	r := within(t, nackerResps, "nacker's first Cluster")
	nack(nacker, resourcev3.ClusterType, "", r)
	nack(nacker, resourcev3.ClusterType, "", r)
	ack(acker, resourcev3.ClusterType, within(t, ackerResps, "acker's first Cluster"))
	e1 := within(t, edsResps, "first assignment")
	ack(eds, resourcev3.EndpointType, e1)
	// A change to another service changes nothing a stream subscribed to.
	s.Update(snap.With(2, time.Now(), []*topology.Service{service("b", "10.0.0.3")}, nil))
	quietUntil(t, nackerResps, time.Now().Add(nackQuiet), "nacker after rejecting its first Cluster")

	// a's Cluster and assignment change: nacker and acker get the Cluster
	// at once; eds gets the assignment and rejects it, keeping e1.
	a2 := roundRobin(service("a", "10.0.0.1", "10.0.0.11"))
	s.Update(snap.With(3, time.Now(), []*topology.Service{a2}, nil))
	r2 := within(t, nackerResps, "nacker's Cluster after a change")
	wantClusters(t, decode[*clusterpb.Cluster](t, r2.GetResources()), a2)
	nack(nacker, resourcev3.ClusterType, "", r2)
	ack(acker, resourcev3.ClusterType, within(t, ackerResps, "acker's Cluster after a change"))
	nack(eds, resourcev3.EndpointType, e1.GetVersionInfo(), within(t, edsResps, "assignment after a change"))
	end := time.Now().Add(nackQuiet)
	quietUntil(t, nackerResps, end, "nacker after rejecting the changed Cluster")
	quietUntil(t, edsResps, end, "eds after rejecting the changed assignment")
	quietUntil(t, ackerResps, end, "acker without a change")

	wantNACKs(t, s, log, map[string]float64{"cluster": 2, "endpoint": 1})
}

// TestServer_DeltaNACKGetsNothingUntilChange: the same over delta ADS.
func TestServer_DeltaNACKGetsNothingUntilChange(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, log, snap := startNACKServer(ctx, t)

	nacker := newDeltaStream(ctx, t, s.addr)
	nacker.subscribe(resourcev3.ClusterType, "a.default:8080")
	nackerResps := responses(ctx, nacker.stream.Recv)
	acker := newDeltaStream(ctx, t, s.addr)
	acker.subscribe(resourcev3.ClusterType, "a.default:8080")
	ackerResps := responses(ctx, acker.stream.Recv)
	ack := func(r *discoverypb.DeltaDiscoveryResponse) {
		acker.send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	nack := func(r *discoverypb.DeltaDiscoveryResponse) {
		nacker.send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce(),
			ErrorDetail: nackDetail("bad " + r.GetSystemVersionInfo())})
	}

	r := within(t, nackerResps, "nacker's first Cluster")
	nack(r)
	nack(r)
	ack(within(t, ackerResps, "acker's first Cluster"))
	s.Update(snap.With(2, time.Now(), []*topology.Service{service("b", "10.0.0.3")}, nil))
	quietUntil(t, nackerResps, time.Now().Add(nackQuiet), "nacker after rejecting its first Cluster")

	a2 := roundRobin(service("a", "10.0.0.1"))
	s.Update(snap.With(3, time.Now(), []*topology.Service{a2}, nil))
	r2 := within(t, nackerResps, "nacker's Cluster after a change")
	wantClusters(t, decode[*clusterpb.Cluster](t, deltaAnys(r2)), a2)
	nack(r2)
	ack(within(t, ackerResps, "acker's Cluster after a change"))
	end := time.Now().Add(nackQuiet)
	quietUntil(t, nackerResps, end, "nacker after rejecting the changed Cluster")
	quietUntil(t, ackerResps, end, "acker without a change")

	wantNACKs(t, s, log, map[string]float64{"cluster": 2})
}

// wantNACKs checks fairway_xds_nacks_total and the warn lines by type
// label: one per rejected response.
func wantNACKs(t *testing.T, s *testServer, log *lockedBuffer, want map[string]float64) {
	t.Helper()
	for _, typ := range []string{"cluster", "endpoint"} {
		if got := testkit.MetricValue(t, s.reg, "fairway_xds_nacks_total", "type", typ); got != want[typ] {
			t.Errorf("fairway_xds_nacks_total{%s} = %v, want %v", typ, got, want[typ])
		}
		if got := log.count("level=WARN", "NACK", "type="+typ, "error=\"bad "); got != int(want[typ]) {
			t.Errorf("warn lines for NACKs of type %s = %d, want %v", typ, got, want[typ])
		}
	}
}

// TestServer_NACKsOfOneVersionLogOneWarnLine: 50 streams rejecting the same
// Cluster version count 50 NACKs, and the server writes one warn line for
// them, at the end of its window, with the number of streams and a few node
// ids; each of the others logs at debug level.
func TestServer_NACKsOfOneVersionLogOneWarnLine(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	const streams = 50
	clk := clocktesting.NewFakeClock(time.Now())
	log := &lockedBuffer{}
	s := startServer(t, xdsserver.WithClock(clk), xdsserver.WithDebounce(0),
		xdsserver.WithLogger(slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1")}))
	testkit.Eventually(ctx, t, "first push", s.Ready)

	names := []string{"a.default:8080"}
	var ads []*sotwADS
	for i := range streams {
		a := newSotWADS(ctx, t, s.addr)
		a.send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: fmt.Sprintf("node-%d", i)}, TypeUrl: resourcev3.ClusterType, ResourceNames: names})
		ads = append(ads, a)
	}
	for i, a := range ads {
		r, err := a.stream.Recv()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		a.send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: names,
			ResponseNonce: r.GetNonce(), ErrorDetail: nackDetail("bad " + r.GetVersionInfo())})
	}
	testkit.Eventually(ctx, t, "every NACK counted", func() bool {
		return testkit.MetricValue(t, s.reg, "fairway_xds_nacks_total", "type", "cluster") == streams
	})
	warns := func() int { return log.count("level=WARN", "NACK") }
	if n := warns(); n != 0 {
		t.Fatalf("%d warn lines before the window ends, want 0", n)
	}
	clk.Step(time.Second)
	if n := warns(); n != 1 {
		t.Fatalf("%d warn lines for %d NACKs of one version, want 1", n, streams)
	}
	if n := log.count("level=WARN", "NACK", fmt.Sprintf("streams=%d", streams), `error="bad `); n != 1 {
		t.Errorf("the warn line does not say streams=%d with the client's error:\n%s", streams, log.lines("level=WARN"))
	}
	if n := strings.Count(log.lines("level=WARN"), "node-"); n != 5 {
		t.Errorf("the warn line names %d node ids, want 5:\n%s", n, log.lines("level=WARN"))
	}
	if n := log.count("level=DEBUG", "NACK"); n != streams-1 {
		t.Errorf("%d debug lines for NACKs, want %d", n, streams-1)
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_nacks_total", "type", "cluster"); got != streams {
		t.Errorf("fairway_xds_nacks_total{cluster} = %v, want %d", got, streams)
	}
}
