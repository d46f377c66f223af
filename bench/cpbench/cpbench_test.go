package cpbench

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go's and net/http's idle keep-alive connections to the
		// stopped API server, and klog's flush daemon.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

func TestRun_SmallScale(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := DefaultConfig()
	cfg.Namespace = "cpbench-test"
	cfg.Services = 20
	cfg.Endpoints = 5
	cfg.Streams = 20
	cfg.Conns = 2
	cfg.Changes = 20
	cfg.ChangeInterval = 30 * time.Millisecond
	cfg.ChangeJitter = 20 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	var out bytes.Buffer
	res, err := Run(ctx, cfg, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("report:\n%s", out.String())

	if res.Changes != cfg.Changes || res.Observed != cfg.Changes || res.Missed != 0 {
		t.Errorf("changes written/observed/missed = %d/%d/%d, want %d/%d/0", res.Changes, res.Observed, res.Missed, cfg.Changes, cfg.Changes)
	}
	if res.SotWStreams != 10 || res.DeltaStreams != 10 {
		t.Errorf("SotW/delta streams = %d/%d, want 10/10", res.SotWStreams, res.DeltaStreams)
	}
	if res.First.N != cfg.Changes || res.Last.N != cfg.Changes {
		t.Errorf("latency samples first/last = %d/%d, want %d", res.First.N, res.Last.N, cfg.Changes)
	}
	if res.First.P50 > res.Last.P50 || res.Last.Max > cfg.ChangeTimeout || res.Last.Max <= 0 {
		t.Errorf("latencies first %+v last %+v: want 0 < first ≤ last ≤ %v", res.First, res.Last, cfg.ChangeTimeout)
	}
	// Delta: exactly one new ClusterLoadAssignment version per subscribed
	// stream per change, and nothing else but re-sends of a stream's
	// previous response, which go-control-plane makes when a cache update
	// races with the stream's ACK (so their number depends on timing, as
	// does how many changes share a debounced push and so a response).
	if !res.DeltaExact || res.DeltaMismatches != 0 {
		t.Errorf("delta not exact: %d mismatches", res.DeltaMismatches)
	}
	if diff := cmp.Diff(res.Delta.Resources-res.Delta.Resent, res.Delta.Subscriptions); diff != "" {
		t.Errorf("delta new CLA versions received vs subscribed streams over all changes (-got +want):\n%s", diff)
	}
	if res.Delta.Resent > 0 {
		t.Logf("delta: %d CLAs re-sent at the version just received", res.Delta.Resent)
	}
	// SotW: at least one CLA per subscribed stream per change (a SotW
	// response may carry the stream's other subscribed CLAs too).
	if res.SotW.Subscriptions == 0 || res.SotW.Resources < res.SotW.Subscriptions {
		t.Errorf("SotW: %d CLAs for %d subscribed streams over all changes, want at least one each", res.SotW.Resources, res.SotW.Subscriptions)
	}
	if res.SotW.PerStreamBytes <= 0 || res.Delta.PerStreamBytes <= 0 {
		t.Errorf("bytes per subscribed stream per change: SotW %.0f, delta %.0f, want positive", res.SotW.PerStreamBytes, res.Delta.PerStreamBytes)
	}
	if res.RSSEnd.RSS == 0 || res.RSSEnd.Peak < res.RSSEnd.RSS || res.CPUChanges <= 0 {
		t.Errorf("process stats RSS %d peak %d CPU %v: want positive, peak ≥ RSS", res.RSSEnd.RSS, res.RSSEnd.Peak, res.CPUChanges)
	}
	if res.ReadyTime <= 0 || res.SetupTime <= 0 || res.SubscribeTime <= 0 {
		t.Errorf("phase times setup %v ready %v subscribe %v: want positive", res.SetupTime, res.ReadyTime, res.SubscribeTime)
	}
	for _, want := range []string{"write → last subscriber", "peak RSS (VmHWM)", "delta: CLAs per subscribed stream"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestLayout_EveryServiceSubscribed(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		services, streams, minS, maxS int
	}{
		{"more streams than services", 20, 100, 1, 10},
		{"fewer streams than services", 1000, 10, 1, 3},
		{"one service", 1, 5, 1, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Services, cfg.Streams, cfg.MinSubscriptions, cfg.MaxSubscriptions = tc.services, tc.streams, tc.minS, tc.maxS
			streams := layout(cfg, newRand(1))
			subs := make([]int, tc.services)
			delta := 0
			for _, s := range streams {
				seen := map[int]bool{}
				for _, svc := range s.services {
					if seen[svc] {
						t.Errorf("stream %d subscribes to service %d twice", s.id, svc)
					}
					seen[svc] = true
					subs[svc]++
				}
				if s.delta {
					delta++
				}
			}
			for svc, n := range subs {
				if n == 0 {
					t.Errorf("service %d has no subscriber", svc)
				}
			}
			if diff := cmp.Diff(delta, tc.streams/2); diff != "" {
				t.Errorf("delta streams (-got +want):\n%s", diff)
			}
		})
	}
}

func TestStream_ClassifyDeltaResources(t *testing.T) {
	s := &stream{delta: true, versions: map[string]string{}, prev: map[string]string{}}
	res := func(nv ...string) []*discoverypb.Resource {
		var out []*discoverypb.Resource
		for i := 0; i < len(nv); i += 2 {
			out = append(out, &discoverypb.Resource{Name: nv[i], Version: nv[i+1], Resource: &anypb.Any{}})
		}
		return out
	}
	for _, step := range []struct {
		name string
		in   []*discoverypb.Resource
		want []claKind
	}{
		{"initial", res("a", "1", "b", "1"), []claKind{newVersion, newVersion}},
		{"a changes", res("a", "2"), []claKind{newVersion}},
		{"the same response again", res("a", "2"), []claKind{resent}},
		{"b changes", res("b", "2"), []claKind{newVersion}},
		{"a again, not in the previous response", res("a", "2"), []claKind{repeated}},
		{"a changes back", res("a", "1"), []claKind{newVersion}},
	} {
		if diff := cmp.Diff(s.classify(step.in), step.want); diff != "" {
			t.Errorf("%s (-got +want):\n%s", step.name, diff)
		}
	}
}

func TestSummarizeLatency_NearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 200; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarizeLatency(ds)
	want := Latency{N: 200, P50: 100 * time.Millisecond, P99: 198 * time.Millisecond, Max: 200 * time.Millisecond}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("summarizeLatency (-got +want):\n%s", diff)
	}
}

func TestReadMemAndCPU_OwnProcess(t *testing.T) {
	pid := os.Getpid()
	m, err := readMem(pid)
	if err != nil {
		t.Fatalf("readMem: %v", err)
	}
	if m.RSS == 0 || m.Peak < m.RSS {
		t.Errorf("readMem = %+v, want RSS > 0 and Peak ≥ RSS", m)
	}
	// Burn a little CPU so that utime+stime moves past zero ticks.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	cpu, err := readCPU(pid)
	if err != nil {
		t.Fatalf("readCPU: %v", err)
	}
	if cpu <= 0 || cpu > time.Hour {
		t.Errorf("readCPU = %v, want a small positive duration", cpu)
	}
}
