package cpbench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
)

// Targets the report compares with.
const (
	TargetP99 = 100 * time.Millisecond // p99 write → last subscriber, including the debounce
	TargetRSS = 300 << 20              // control plane peak RSS, bytes
)

// Result holds the measurements of one Run.
type Result struct {
	Config  Config
	Machine Machine

	APIServerStart time.Duration // etcd + kube-apiserver to /readyz (zero with an external cluster)
	CreateTime     time.Duration // namespace, Services and EndpointSlices created
	SetupTime      time.Duration // APIServerStart + CreateTime
	ReadyTime      time.Duration // control plane process start → /readyz (first full snapshot pushed)
	SubscribeTime  time.Duration // streams opened → every subscription answered
	ChangePhase    time.Duration // first change → last seen everywhere, plus a quiet period

	Subscriptions int // (stream, service) pairs
	SotWStreams   int
	DeltaStreams  int

	Changes  int // changes written
	Observed int // changes seen by every subscriber of their service
	Missed   int // changes some subscriber did not see within the change timeout
	// Early counts observations that arrived before the write call returned
	// (counted as zero latency).
	Early int

	// First is the latency from the write returning to the first subscriber
	// seeing the change, Last to the last subscriber (observed changes only).
	First, Last Latency
	// LastFromStart is the latency from the Update call starting to the
	// last subscriber: an upper bound that early observations cannot
	// flatter.
	LastFromStart Latency
	// Write is how long the EndpointSlice Update calls took (all changes).
	Write Latency

	RSSReady      Mem // after the first full snapshot
	RSSSubscribed Mem // after every stream was answered
	RSSEnd        Mem // after the changes; Peak is the process's VmHWM
	CPUChanges    time.Duration

	// SotW and Delta are what each kind of stream received per change.
	SotW, Delta Traffic
	// DeltaExact reports whether every delta stream received, for every
	// service it subscribes to, exactly one new version of its
	// ClusterLoadAssignment per change of that service, and nothing else
	// but re-sends (Traffic.Resent), during the change phase.
	DeltaExact bool
	// DeltaMismatches counts (stream, service) pairs where that was not so.
	DeltaMismatches int
}

// Latency summarises latencies with the nearest-rank method.
type Latency struct {
	N             int
	P50, P99, Max time.Duration
}

// Traffic is the responses one kind of stream (SotW or delta) received
// during the change phase.
type Traffic struct {
	Subscriptions int // (stream, service) pairs of this kind over all changes made
	Responses     int
	Resources     int   // ClusterLoadAssignments
	Bytes         int64 // sum of proto.Size of the responses
	// PerChangeBytes is Bytes / changes: what one single-endpoint change
	// costs over all subscribed streams of this kind.
	PerChangeBytes float64
	// PerStreamBytes and PerStreamResources are per subscribed stream per
	// change: Bytes / Subscriptions and Resources / Subscriptions.
	PerStreamBytes     float64
	PerStreamResources float64
	// MaxResources is the most resources in one response.
	MaxResources int
	// Resent counts, for delta, CLAs received again at the version the
	// stream had just received in its previous response: go-control-plane's
	// delta server answers twice when the cache update behind a response
	// races with the stream's ACK. Included in Resources. Zero for SotW.
	Resent int
}

// summarize fills the result from the changes and the streams' counters.
func (r *Result) summarize(changes []*change, streams []*stream) {
	r.Changes = len(changes)
	perService := r.summarizeChanges(changes, subscribersOf(streams))
	r.summarizeStreams(streams, perService)
	r.summarizeTraffic(changes)
}

// subscribersOf counts, per resource name, the (sotw, delta) streams
// subscribed to it.
func subscribersOf(streams []*stream) map[string][2]int {
	subsOf := map[string][2]int{}
	for _, s := range streams {
		for _, n := range s.names {
			v := subsOf[n]
			if s.delta {
				v[1]++
			} else {
				v[0]++
			}
			subsOf[n] = v
		}
	}
	return subsOf
}

// summarizeChanges fills the change counts, subscriptions and latencies,
// and returns the number of changes per resource name.
func (r *Result) summarizeChanges(changes []*change, subsOf map[string][2]int) map[string]int {
	perService := map[string]int{}
	var first, last, lastFromStart, writes []time.Duration
	for _, ch := range changes {
		perService[ch.name]++
		writes = append(writes, ch.returned.Sub(ch.started))
		v := subsOf[ch.name]
		r.SotW.Subscriptions += v[0]
		r.Delta.Subscriptions += v[1]
		if ch.missed {
			r.Missed++
			continue
		}
		r.Observed++
		lo, hi, hiStart := r.observationSpread(ch)
		first = append(first, lo)
		last = append(last, hi)
		lastFromStart = append(lastFromStart, hiStart)
	}
	r.First = summarizeLatency(first)
	r.Last = summarizeLatency(last)
	r.Write = summarizeLatency(writes)
	r.LastFromStart = summarizeLatency(lastFromStart)
	return perService
}

// observationSpread returns the first and last observation of ch after its
// write returned, and the last after it started, counting observations
// that came before the write returned in r.Early.
func (r *Result) observationSpread(ch *change) (lo, hi, hiStart time.Duration) {
	for i, o := range slices.Collect(maps.Values(ch.obs)) {
		hiStart = max(hiStart, o.at.Sub(ch.started))
		d := o.at.Sub(ch.returned)
		if d < 0 {
			r.Early++
			d = 0
		}
		if i == 0 || d < lo {
			lo = d
		}
		if i == 0 || d > hi {
			hi = d
		}
	}
	return lo, hi, hiStart
}

// summarizeStreams adds the streams' counters to the traffic per kind and
// checks that each delta stream received exactly the changes of its names.
func (r *Result) summarizeStreams(streams []*stream, perService map[string]int) {
	for _, s := range streams {
		t := &r.SotW
		if s.delta {
			t = &r.Delta
		}
		s.mu.Lock()
		t.Responses += s.responses
		t.Resources += s.resources
		t.Bytes += s.bytes
		t.Resent += s.resent
		if s.delta {
			for _, n := range s.names {
				if s.perName[n] != perService[n] {
					r.DeltaMismatches++
				}
			}
			// Anything but new versions and re-sends (another name, a
			// version the stream had from before) is a mismatch too.
			if s.resources-s.resent != sumOver(s.names, perService) {
				r.DeltaMismatches++
			}
		}
		s.mu.Unlock()
	}
	r.DeltaExact = r.DeltaMismatches == 0
}

// summarizeTraffic derives the per-change and per-stream traffic and the
// largest response per kind.
func (r *Result) summarizeTraffic(changes []*change) {
	for _, t := range []*Traffic{&r.SotW, &r.Delta} {
		if r.Changes > 0 {
			t.PerChangeBytes = float64(t.Bytes) / float64(r.Changes)
		}
		if t.Subscriptions > 0 {
			t.PerStreamBytes = float64(t.Bytes) / float64(t.Subscriptions)
			t.PerStreamResources = float64(t.Resources) / float64(t.Subscriptions)
		}
	}
	// The largest response per kind, from the observations.
	for _, ch := range changes {
		for _, o := range ch.obs {
			t := &r.SotW
			if o.delta {
				t = &r.Delta
			}
			t.MaxResources = max(t.MaxResources, o.resources)
		}
	}
}

func sumOver(names []string, n map[string]int) int {
	s := 0
	for _, name := range names {
		s += n[name]
	}
	return s
}

func summarizeLatency(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Latency{N: len(s), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

// WriteReport writes the result as markdown.
func (r *Result) WriteReport(w io.Writer) {
	c := r.Config
	m := r.Machine
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("Control plane convergence: %d services × %d endpoints, %d ADS streams (%d SotW, %d delta) over %d connections, %d subscriptions, %d changes, debounce %v\n\n",
		c.Services, c.Endpoints, c.Streams, r.SotWStreams, r.DeltaStreams, c.Conns, r.Subscriptions, r.Changes, c.Debounce)
	p("Machine: %d CPUs, %s, %.1f GiB RAM, load average %.2f at start\n\n", m.CPUs, m.CPUModel, float64(m.MemTotal)/(1<<30), m.LoadAvg)
	p("| measurement | value | target |\n|---|---|---|\n")
	if r.APIServerStart > 0 {
		p("| etcd + kube-apiserver start | %v | |\n", r.APIServerStart.Round(time.Millisecond))
	}
	p("| create %d Services + %d EndpointSlices | %v | |\n", c.Services, c.Services, r.CreateTime.Round(time.Millisecond))
	p("| setup total | %v | |\n", r.SetupTime.Round(time.Millisecond))
	p("| control plane start → first full snapshot (/readyz) | %v | |\n", r.ReadyTime.Round(time.Millisecond))
	p("| %d streams opened → every subscription answered | %v | |\n", c.Streams, r.SubscribeTime.Round(time.Millisecond))
	p("| changes seen by every subscriber | %d / %d (%d missed) | all |\n", r.Observed, r.Changes, r.Missed)
	p("| EndpointSlice Update call p50 / p99 / max | %v / %v / %v | |\n", ms(r.Write.P50), ms(r.Write.P99), ms(r.Write.Max))
	p("| write → first subscriber p50 / p99 / max | %v / %v / %v | |\n", ms(r.First.P50), ms(r.First.P99), ms(r.First.Max))
	p("| write → last subscriber p50 / p99 / max | %v / %v / %v | p99 ≤ %v %s |\n", ms(r.Last.P50), ms(r.Last.P99), ms(r.Last.Max), TargetP99, verdict(r.Last.P99 <= TargetP99 && r.Missed == 0))
	p("| write start → last subscriber p50 / p99 / max | %v / %v / %v | |\n", ms(r.LastFromStart.P50), ms(r.LastFromStart.P99), ms(r.LastFromStart.Max))
	p("| control plane RSS after snapshot / after subscribe / end | %s / %s / %s | |\n", mib(r.RSSReady.RSS), mib(r.RSSSubscribed.RSS), mib(r.RSSEnd.RSS))
	p("| control plane peak RSS (VmHWM) | %s | ≤ %s %s |\n", mib(r.RSSEnd.Peak), mib(TargetRSS), verdict(r.RSSEnd.Peak <= TargetRSS))
	p("| control plane CPU during the change phase (%v) | %.2f s (%.0f%% of one core) | |\n", r.ChangePhase.Round(time.Millisecond), r.CPUChanges.Seconds(), 100*r.CPUChanges.Seconds()/r.ChangePhase.Seconds())
	p("| SotW: bytes per change (all streams) / per subscribed stream | %.0f / %.0f | |\n", r.SotW.PerChangeBytes, r.SotW.PerStreamBytes)
	p("| SotW: CLAs per subscribed stream per change (max in one response) | %.2f (%d) | |\n", r.SotW.PerStreamResources, r.SotW.MaxResources)
	p("| delta: bytes per change (all streams) / per subscribed stream | %.0f / %.0f | |\n", r.Delta.PerChangeBytes, r.Delta.PerStreamBytes)
	p("| delta: CLAs per subscribed stream per change (max in one response) | %.2f (%d) | 1 %s |\n", r.Delta.PerStreamResources, r.Delta.MaxResources, verdict(r.DeltaExact))
	if r.Early > 0 {
		p("\n%d observations arrived before the write call returned (counted as 0 ms).\n", r.Early)
	}
	if r.Delta.Resent > 0 {
		p("\n%d delta CLAs were re-sent at the version their stream had just received (go-control-plane answers twice when a cache update races with the stream's ACK); they are not counted against exactness.\n", r.Delta.Resent)
	}
	if !r.DeltaExact {
		p("\n%d (delta stream, service) pairs did not receive exactly one new CLA version per change.\n", r.DeltaMismatches)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func verdict(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}
