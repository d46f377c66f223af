package testkit

import (
	"context"
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
