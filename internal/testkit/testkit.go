// Package testkit holds the helpers Fairway's tests share: waiting with a
// bound (Recv, Eventually) and reading metrics (MetricValue). Test code
// only; every wait fails the test loudly rather than hanging.
package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Timeout is how long Recv waits by default.
const Timeout = 10 * time.Second

// Recv returns the next value from ch, failing the test after Timeout.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return RecvWithin(t, ch, Timeout, what)
}

// RecvWithin returns the next value from ch, failing the test after d.
func RecvWithin[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", d, what)
		panic("unreachable")
	}
}

// Eventually polls cond every 5 ms until it holds, failing the test when
// ctx ends first.
func Eventually(ctx context.Context, t testing.TB, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// MetricValue returns the value of the counter, gauge or untyped metric
// name in g whose labels include labels (name, value pairs), summed over
// every series that matches: 0 when none does, or when name is registered
// with no series yet (a vector none of whose label values has been used).
// It fails the test when name is not registered in g; telling "no series"
// from "not registered" takes a g that is also a prometheus.Registerer (a
// *prometheus.Registry is), else both fail.
func MetricValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("MetricValue(%s): labels must be name, value pairs", name)
	}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				sum += value(m)
			}
		}
		return sum
	}
	switch known, ok := registered(g, name); {
	case !ok:
		t.Fatalf("metric %s is not registered, or has no series yet (%T cannot tell which)", name, g)
	case !known:
		t.Fatalf("metric %s is not registered", name)
	}
	return 0
}

// matches reports whether m's labels include labels (name, value pairs).
func matches(m *dto.Metric, labels []string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for i := 0; i < len(labels); i += 2 {
		if have[labels[i]] != labels[i+1] {
			return false
		}
	}
	return true
}

// value is m's value as a counter, gauge or untyped metric (0 otherwise).
func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// registered reports whether a metric name is registered in g (ok: g can
// tell, being a prometheus.Registerer). It asks g to register a probe that
// describes name and collects nothing: a registry refuses a descriptor
// whose name it holds (the same name with other labels or help, or the
// same name and constant labels), and the probe is unregistered at once
// when it was taken. A probe taken leaves the name's help and label names
// in the registry (a Registry keeps them for its lifetime), which matters
// only to a test that goes on after MetricValue failed it.
func registered(g prometheus.Gatherer, name string) (known, ok bool) {
	r, ok := g.(prometheus.Registerer)
	if !ok {
		return false, false
	}
	p := probe{prometheus.NewDesc(name, "testkit probe of whether "+name+" is registered", []string{"testkit_probe"}, nil)}
	if err := r.Register(p); err != nil {
		return true, true
	}
	r.Unregister(p)
	return false, true
}

// probe is a collector of one descriptor and no metrics.
type probe struct{ desc *prometheus.Desc }

func (p probe) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }
func (p probe) Collect(chan<- prometheus.Metric)    {}
