package testkit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricValue_SumsMatchingSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"a", "b"})
	reg.MustRegister(c)
	c.WithLabelValues("1", "p").Add(2)
	c.WithLabelValues("1", "q").Add(3)
	c.WithLabelValues("2", "p").Add(5)
	if got := MetricValue(t, reg, "x_total", "a", "1"); got != 5 {
		t.Errorf("a=1: %v, want 5", got)
	}
	if got := MetricValue(t, reg, "x_total"); got != 10 {
		t.Errorf("all: %v, want 10", got)
	}
	if got := MetricValue(t, reg, "x_total", "a", "3"); got != 0 {
		t.Errorf("a=3: %v, want 0", got)
	}
}

// fatalRecorder is a testing.TB whose Fatal and Fatalf record the message
// and end the function under test (by panicking with errFatal).
type fatalRecorder struct {
	testing.TB
	msg string
}

var errFatal = errors.New("fatal")

func (r *fatalRecorder) Helper()           {}
func (r *fatalRecorder) Fatal(args ...any) { r.msg = fmt.Sprint(args...); panic(errFatal) }
func (r *fatalRecorder) Fatalf(f string, args ...any) {
	r.msg = fmt.Sprintf(f, args...)
	panic(errFatal)
}

// fails runs f with a fatalRecorder and returns the failure it recorded
// ("" for none).
func fails(t *testing.T, f func(tb testing.TB)) (msg string) {
	r := &fatalRecorder{TB: t}
	defer func() {
		if p := recover(); p != nil && p != errFatal {
			panic(p)
		}
		msg = r.msg
	}()
	f(r)
	return ""
}

func TestMetricValue_NoSeriesIsZeroUnregisteredFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "empty_total", Help: "x"}, []string{"a"}))
	reg.MustRegister(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "const_gauge", Help: "x", ConstLabels: prometheus.Labels{"c": "1"}}, []string{"a"}))
	for _, name := range []string{"empty_total", "const_gauge"} {
		var got float64
		if msg := fails(t, func(tb testing.TB) { got = MetricValue(tb, reg, name, "a", "1") }); msg != "" || got != 0 {
			t.Errorf("%s, registered without series: %v, failure %q; want 0, none", name, got, msg)
		}
	}
	if msg := fails(t, func(tb testing.TB) { MetricValue(tb, reg, "empty_totl") }); !strings.Contains(msg, "not registered") {
		t.Errorf("a name not registered: failure %q, want one saying so", msg)
	}
	// The probe is gone: the registry gathers what it did.
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Errorf("after the probe the registry gathers %d families (error %v), want 0", len(mfs), err)
	}
	// A Gatherer that cannot tell fails for both.
	if msg := fails(t, func(tb testing.TB) { MetricValue(tb, prometheus.Gatherers{reg}, "empty_total") }); msg == "" {
		t.Error("a Gatherers without series: no failure, want one")
	}
}

func TestRecvAndEventually(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := Recv(t, ch, "seven"); got != 7 {
		t.Errorf("Recv = %d, want 7", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n := 0
	Eventually(ctx, t, "three polls", func() bool { n++; return n == 3 })
}
