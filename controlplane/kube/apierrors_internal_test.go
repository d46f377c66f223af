package kube

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDescribe_ResourceAndVerbOfAPIPaths(t *testing.T) {
	for _, tc := range []struct{ url, resource, verb string }{
		{"https://h/api/v1/services?limit=500", "services", "list"},
		{"https://h/api/v1/namespaces/ns/pods?watch=true", "pods", "watch"},
		{"https://h/apis/discovery.k8s.io/v1/endpointslices?watch=1", "endpointslices", "watch"},
		{"https://h/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices", "endpointslices", "list"},
		{"https://h/api/v1/namespaces", "namespaces", "list"},
		{"https://h/version", "other", "list"},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.url, nil)
		if r, v := describe(req); r != tc.resource || v != tc.verb {
			t.Errorf("describe(%s) = %q, %q; want %q, %q", tc.url, r, v, tc.resource, tc.verb)
		}
	}
}

func TestRequestWatcher_CountsFailuresAndForgetsThemOnSuccess(t *testing.T) {
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"resource", "verb"})
	w := newRequestWatcher(slog.New(slog.NewTextHandler(io.Discard, nil)), counter)
	var status int
	var fail error
	rt := w.wrap(roundTripperFunc(func(*http.Request) (*http.Response, error) {
		if fail != nil {
			return nil, fail
		}
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Body: http.NoBody}, nil
	}))
	get := func(url string) {
		resp, _ := rt.RoundTrip(httptest.NewRequest(http.MethodGet, url, nil))
		if resp != nil {
			resp.Body.Close()
		}
	}

	fail = errors.New("connection refused")
	get("https://h/api/v1/services")
	fail, status = nil, http.StatusForbidden
	get("https://h/api/v1/pods?watch=true")
	status = http.StatusGone // an expired watch: not a failure
	get("https://h/api/v1/pods?watch=true")
	if got := testutil.ToFloat64(counter.WithLabelValues("services", "list")); got != 1 {
		t.Errorf("services list failures = %v, want 1", got)
	}
	if got := testutil.ToFloat64(counter.WithLabelValues("pods", "watch")); got != 1 {
		t.Errorf("pods watch failures = %v, want 1", got)
	}
	status = http.StatusOK
	get("https://h/api/v1/services")
	if err := w.lastError(); err == nil {
		t.Error("lastError() = nil while pods still fail")
	}
	get("https://h/api/v1/pods?watch=true")
	if err := w.lastError(); err != nil {
		t.Errorf("lastError() = %v after every resource succeeded, want nil", err)
	}
}
