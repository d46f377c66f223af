package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegister_ReusesTheCollectorAlreadyRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := Register(reg, SourceProblems())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Register(reg, SourceProblems())
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("second Register returned a new collector, want the one already registered")
	}
	b.WithLabelValues("file", "x").Inc()
	if got := testutil.ToFloat64(a.WithLabelValues("file", "x")); got != 1 {
		t.Errorf("shared counter = %v, want 1", got)
	}
}

func TestRegister_ReportsConflicts(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := Register(reg, SourceProblems()); err != nil {
		t.Fatal(err)
	}
	// Same name, other labels: not the same collector.
	other := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fairway_source_problems_total", Help: "x"}, []string{"other"})
	got, err := Register(reg, other)
	if err == nil {
		t.Error("Register of a conflicting collector: no error")
	}
	if got != other {
		t.Error("Register of a conflicting collector did not return it")
	}
}

func TestRegister_NilRegistererRegistersNothing(t *testing.T) {
	c := SourceProblems()
	got, err := Register(nil, c)
	if err != nil || got != c {
		t.Errorf("Register(nil, c) = %v, %v; want c, nil", got, err)
	}
}
