// Package promreg is how every Fairway package registers its Prometheus
// collectors: with the Registerer the user passes in an option named
// WithRegisterer (nil: not registered), reusing a collector that another
// Fairway component already registered under the same name, so that several
// components (two sources, two clients) share one registry.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns it, or returns the collector of
// the same type already registered under the same descriptor. Any other
// registration error is returned with c. A nil reg registers nothing.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// SourceProblems is fairway_source_problems_total, the counter every
// topology source (Kubernetes, file) increments for an input object it
// skipped or corrected, by source and reason. Sources register it with
// Register, so two sources in one process share it.
func SourceProblems() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_source_problems_total",
		Help: "Invalid or surprising input objects reported by a source, by source and reason.",
	}, []string{"source", "reason"})
}
