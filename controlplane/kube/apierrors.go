package kube

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// warnEvery is how often a resource whose requests keep failing is logged
// again at Warn (its first failure always is).
const warnEvery = 30 * time.Second

// requestWatcher sees every GET the source's client sends to the API server
// (the informers' lists and watches) and makes a failure loud: a Warn naming
// the cause, a count in fairway_kube_watch_errors_total and the last error
// for LastError.
//
// It sits in the client's transport because that is the one place that sees
// every failure: client-go's reflector retries a refused connection by itself
// and reports it only at klog verbosity 4, never to an informer's watch error
// handler.
type requestWatcher struct {
	log    *slog.Logger
	errors *prometheus.CounterVec // fairway_kube_watch_errors_total{resource,verb}

	mu      sync.Mutex
	last    error                // guarded by mu: the last failure, nil once no resource is failing
	warned  map[string]time.Time // guarded by mu: failing resource → last Warn
	failing map[string]int       // guarded by mu: failing resource → failures since the last Warn
}

func newRequestWatcher(log *slog.Logger, errors *prometheus.CounterVec) *requestWatcher {
	return &requestWatcher{log: log, errors: errors, warned: make(map[string]time.Time), failing: make(map[string]int)}
}

// wrap is a rest.Config WrapTransport.
func (w *requestWatcher) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if req.Method != http.MethodGet || req.Context().Err() != nil {
			return resp, err
		}
		resource, verb := describe(req)
		target := req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
		switch {
		case err != nil:
			w.failed(resource, verb, fmt.Errorf("fairway/kube: %s %s: %w", verb, target, err))
		case resp.StatusCode >= 400 && resp.StatusCode != http.StatusGone:
			// 410 Gone is a watch from a compacted resource version: the
			// reflector relists, nothing is wrong.
			w.failed(resource, verb, fmt.Errorf("fairway/kube: %s %s: %s", verb, target, resp.Status))
		case resp.StatusCode < 300:
			w.succeeded(resource)
		}
		return resp, err
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// describe returns the resource a request lists or watches ("services",
// "endpointslices", "pods") and "list" or "watch".
func describe(req *http.Request) (resource, verb string) {
	verb = "list"
	if v := req.URL.Query().Get("watch"); v == "true" || v == "1" {
		verb = "watch"
	}
	segs := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	switch {
	case len(segs) >= 2 && segs[0] == "api":
		segs = segs[2:]
	case len(segs) >= 3 && segs[0] == "apis":
		segs = segs[3:]
	default:
		return "other", verb
	}
	if len(segs) >= 3 && segs[0] == "namespaces" {
		segs = segs[2:]
	}
	if len(segs) == 0 || segs[0] == "" {
		return "other", verb
	}
	return segs[0], verb
}

func (w *requestWatcher) failed(resource, verb string, err error) {
	w.errors.WithLabelValues(resource, verb).Inc()
	now := time.Now()
	w.mu.Lock()
	w.last = err
	w.failing[resource]++
	n := w.failing[resource]
	warnedAt, warned := w.warned[resource]
	warn := !warned || now.Sub(warnedAt) >= warnEvery
	if warn {
		w.warned[resource] = now
		w.failing[resource] = 0
	}
	w.mu.Unlock()
	if warn {
		w.log.Warn("Kubernetes API request failed; retrying", "resource", resource, "verb", verb, "error", err, "failures", n)
	}
}

func (w *requestWatcher) succeeded(resource string) {
	w.mu.Lock()
	_, was := w.warned[resource]
	delete(w.warned, resource)
	delete(w.failing, resource)
	if len(w.warned) == 0 {
		w.last = nil
	}
	w.mu.Unlock()
	if was {
		w.log.Info("Kubernetes API request succeeded again", "resource", resource)
	}
}

// lastError returns the last failed request's error, or nil once a request
// for every resource that failed has succeeded.
func (w *requestWatcher) lastError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}
