package file

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/fairway-lb/fairway/controlplane/convert"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// served is how long a change may take to be served.
const served = time.Second

// recordingSink records the snapshots it is given.
type recordingSink struct {
	ch chan *topology.Snapshot
}

func (r *recordingSink) Update(s *topology.Snapshot) { r.ch <- s }

// logs is a slog.Handler keeping every record as "LEVEL msg k=v ...".
type logs struct {
	mu      sync.Mutex
	lines   []string // guarded by mu
	updated chan struct{}
}

func newLogs() *logs { return &logs{updated: make(chan struct{}, 1)} }

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logs) WithGroup(string) slog.Handler            { return l }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	select {
	case l.updated <- struct{}{}:
	default:
	}
	return nil
}

// count is the number of lines containing substr.
func (l *logs) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// wait waits for the n-th line containing substr and returns it.
func (l *logs) wait(t *testing.T, substr string, n int) string {
	t.Helper()
	deadline := time.After(served)
	for {
		l.mu.Lock()
		seen := 0
		for _, line := range l.lines {
			if strings.Contains(line, substr) {
				seen++
				if seen == n {
					l.mu.Unlock()
					return line
				}
			}
		}
		l.mu.Unlock()
		select {
		case <-l.updated:
		case <-deadline:
			t.Fatalf("no log line #%d containing %q within %v", n, substr, served)
		}
	}
}

type harness struct {
	sink     *recordingSink
	logs     *logs
	reg      *prometheus.Registry
	problems chan convert.Problem
}

// start runs a Source on path until the test ends.
func start(t *testing.T, path string, opts ...Option) *harness {
	t.Helper()
	h := &harness{
		sink:     &recordingSink{ch: make(chan *topology.Snapshot, 100)},
		logs:     newLogs(),
		reg:      prometheus.NewRegistry(),
		problems: make(chan convert.Problem, 100),
	}
	opts = append([]Option{
		WithLogger(slog.New(h.logs)),
		WithRegisterer(h.reg),
		WithProblemHandler(func(p convert.Problem) { h.problems <- p }),
	}, opts...)
	src := New(path, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, h.sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	return h
}

// next waits for the next snapshot.
func (h *harness) next(t *testing.T) *topology.Snapshot {
	t.Helper()
	return testkit.RecvWithin(t, h.sink.ch, served, "the next snapshot")
}

// none checks that no snapshot has been handed over.
func (h *harness) none(t *testing.T) {
	t.Helper()
	select {
	case s := <-h.sink.ch:
		t.Fatalf("unexpected snapshot version %d with %d services", s.Version(), s.Len())
	default:
	}
}

// world is the service ports of a snapshot with their endpoint addresses.
func world(s *topology.Snapshot) map[string][]string {
	m := map[string][]string{}
	for _, k := range s.Keys() {
		svc, _ := s.Service(k)
		eps := []string{}
		for _, ep := range svc.Endpoints {
			eps = append(eps, ep.Key())
		}
		m[k.ResourceName()] = eps
	}
	return m
}

func checkWorld(t *testing.T, s *topology.Snapshot, want map[string][]string) {
	t.Helper()
	if diff := cmp.Diff(world(s), want); diff != "" {
		t.Errorf("snapshot version %d (-got +want):\n%s", s.Version(), diff)
	}
}

// svcYAML is a Service NAME in default with port 80 named grpc, and one
// EndpointSlice with the given addresses on port 8080.
func svcYAML(name string, addrs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: default}\nspec:\n  ports: [{name: grpc, port: 80}]\n---\n", name)
	fmt.Fprintf(&b, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s-1\n  namespace: default\n  labels: {kubernetes.io/service-name: %s}\naddressType: IPv4\nports: [{name: grpc, port: 8080}]\nendpoints:\n", name, name)
	for _, a := range addrs {
		fmt.Fprintf(&b, "- addresses: [%q]\n  zone: zone-a\n", a)
	}
	return b.String()
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace writes content to a temporary file and renames it over path.
func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	write(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestSource_InitialLoadAndEditInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.yaml")
	write(t, path, svcYAML("echo", "10.0.0.1", "10.0.0.2")+"---\n"+svcYAML("other", "10.0.1.1"))
	h := start(t, path)

	s := h.next(t)
	if s.Version() != 1 {
		t.Errorf("first version = %d, want 1", s.Version())
	}
	checkWorld(t, s, map[string][]string{
		"echo.default:80":  {"10.0.0.1:8080", "10.0.0.2:8080"},
		"other.default:80": {"10.0.1.1:8080"},
	})
	otherBefore, _ := s.Service(topology.ServiceKey{Namespace: "default", Name: "other", Port: 80})

	edited := time.Now()
	write(t, path, svcYAML("echo", "10.0.0.1")+"---\n"+svcYAML("other", "10.0.1.1"))
	s2 := h.next(t)
	t.Logf("edit in place served after %v", time.Since(edited))
	if s2.Version() != 2 {
		t.Errorf("second version = %d, want 2", s2.Version())
	}
	if !s2.Changed().After(s.Changed()) || s2.Changed().After(time.Now()) {
		t.Errorf("Changed() = %v, want after %v and not in the future", s2.Changed(), s.Changed())
	}
	checkWorld(t, s2, map[string][]string{
		"echo.default:80":  {"10.0.0.1:8080"},
		"other.default:80": {"10.0.1.1:8080"},
	})
	otherAfter, _ := s2.Service(topology.ServiceKey{Namespace: "default", Name: "other", Port: 80})
	if otherAfter != otherBefore {
		t.Errorf("unchanged service other.default:80 got a new *Service; want the previous pointer reused")
	}

	// A change that does not change the world (a comment) gives no snapshot.
	write(t, path, "# just a comment\n"+svcYAML("echo", "10.0.0.1")+"---\n"+svcYAML("other", "10.0.1.1"))
	h.logs.wait(t, "the file changed but the world did not", 1)
	h.none(t)
}

func TestSource_ReplaceByRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.yaml")
	write(t, path, svcYAML("echo", "10.0.0.1"))
	h := start(t, path)
	checkWorld(t, h.next(t), map[string][]string{"echo.default:80": {"10.0.0.1:8080"}})

	replaced := time.Now()
	replace(t, path, svcYAML("echo", "10.0.0.1", "10.0.0.3"))
	s := h.next(t)
	t.Logf("rename served after %v", time.Since(replaced))
	checkWorld(t, s, map[string][]string{"echo.default:80": {"10.0.0.1:8080", "10.0.0.3:8080"}})
}

// TestSource_ConfigMapSymlinkSwap mimics how the kubelet updates a ConfigMap
// volume: the file is a symlink through "..data", a symlink to a timestamped
// folder that is swapped by rename.
func TestSource_ConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	writeVersion := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "world.yaml"), content)
	}
	writeVersion("..2026_11_26_00_00_00.1", svcYAML("echo", "10.0.0.1"))
	if err := os.Symlink("..2026_11_26_00_00_00.1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "world.yaml")
	if err := os.Symlink(filepath.Join("..data", "world.yaml"), path); err != nil {
		t.Fatal(err)
	}
	h := start(t, path)
	checkWorld(t, h.next(t), map[string][]string{"echo.default:80": {"10.0.0.1:8080"}})

	swapped := time.Now()
	writeVersion("..2026_11_26_00_01_00.2", svcYAML("echo", "10.0.0.2"))
	if err := os.Symlink("..2026_11_26_00_01_00.2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_11_26_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	s := h.next(t)
	t.Logf("symlink swap served after %v", time.Since(swapped))
	checkWorld(t, s, map[string][]string{"echo.default:80": {"10.0.0.2:8080"}})
}

func TestSource_MalformedFileKeepsLastGoodState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.yaml")
	good := svcYAML("echo", "10.0.0.1") + "---\n" + svcYAML("other", "10.0.1.1")
	write(t, path, good)
	h := start(t, path)
	checkWorld(t, h.next(t), map[string][]string{"echo.default:80": {"10.0.0.1:8080"}, "other.default:80": {"10.0.1.1:8080"}})

	// The first documents are good; the third is broken: the whole file is
	// rejected, never served as a world with fewer services.
	replace(t, path, svcYAML("echo", "10.0.0.1")+"---\napiVersion: v1\nkind: Service\nmetadata: {name: other\n")
	line := h.logs.wait(t, "rejecting the file", 1)
	if !strings.Contains(line, "ERROR") || !strings.Contains(line, "document 3") || !strings.Contains(line, "keeping the last good state (version 1)") {
		t.Errorf("log line %q: want an ERROR naming document 3 and keeping version 1", line)
	}
	h.none(t)
	if got := testkit.MetricValue(t, h.reg, "fairway_source_problems_total", "source", "file", "reason", ReasonMalformedFile); got != 1 {
		t.Errorf("fairway_source_problems_total{reason=%q} = %v, want 1", ReasonMalformedFile, got)
	}

	// A fixed file is picked up.
	replace(t, path, svcYAML("echo", "10.0.0.1", "10.0.0.2")+"---\n"+svcYAML("other", "10.0.1.1"))
	s := h.next(t)
	if s.Version() != 2 {
		t.Errorf("version = %d, want 2", s.Version())
	}
	checkWorld(t, s, map[string][]string{"echo.default:80": {"10.0.0.1:8080", "10.0.0.2:8080"}, "other.default:80": {"10.0.1.1:8080"}})
}

func TestSource_EmptyFileIsNotAnEmptyWorld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.yaml")
	write(t, path, svcYAML("echo", "10.0.0.1"))
	h := start(t, path)
	checkWorld(t, h.next(t), map[string][]string{"echo.default:80": {"10.0.0.1:8080"}})

	write(t, path, "")
	h.logs.wait(t, "the file is empty; keeping the last good state (version 1)", 1)
	write(t, path, "  \n\t\n")
	h.logs.wait(t, "the file is empty; keeping the last good state (version 1)", 2)
	h.none(t)

	// An explicit empty list is an empty world.
	replace(t, path, "apiVersion: v1\nkind: List\nitems: []\n")
	s := h.next(t)
	if s.Len() != 0 || s.Version() != 2 {
		t.Errorf("snapshot version %d with %d services, want version 2 with none", s.Version(), s.Len())
	}
}

func TestSource_WaitsForAGoodFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.yaml")
	h := start(t, path)
	h.logs.wait(t, "cannot read the file; nothing is served until the file is good", 1)
	h.none(t)

	write(t, path, "apiVersion: v1\nkind: Service\nmetadata: {name: [\n")
	h.logs.wait(t, "rejecting the file; nothing is served until the file is good", 1)
	h.none(t)

	replace(t, path, svcYAML("echo", "10.0.0.1"))
	s := h.next(t)
	if s.Version() != 1 {
		t.Errorf("first version = %d, want 1", s.Version())
	}
	checkWorld(t, s, map[string][]string{"echo.default:80": {"10.0.0.1:8080"}})
}

// TestSource_ResyncWithoutFolder starts before the file's folder exists, so
// no watch can be set: the periodic re-read still finds the file.
func TestSource_ResyncWithoutFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "world.yaml")
	h := start(t, path, WithResync(100*time.Millisecond))
	h.logs.wait(t, "cannot watch the folder", 1)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, path, svcYAML("echo", "10.0.0.1"))
	checkWorld(t, h.next(t), map[string][]string{"echo.default:80": {"10.0.0.1:8080"}})
	h.logs.wait(t, "watching the folder", 1)

	// Once watched, edits are seen from events.
	replace(t, path, svcYAML("echo", "10.0.0.2"))
	checkWorld(t, h.next(t), map[string][]string{"echo.default:80": {"10.0.0.2:8080"}})
}

func TestSource_ObjectProblemsAreReportedAndSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.yaml")
	content := `apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: default
  annotations:
    fairway.io/lb-policy: fastest
    fairway.io/choice-count: "3"
spec:
  ports: [{name: grpc, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: default, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: grpc, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: stray, namespace: default}
addressType: IPv4
ports: [{name: grpc, port: 8080}]
endpoints: [{addresses: [10.0.0.9]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
`
	write(t, path, content)
	h := start(t, path)
	s := h.next(t)
	checkWorld(t, s, map[string][]string{"echo.default:80": {"10.0.0.1:8080"}})
	svc, _ := s.Service(topology.ServiceKey{Namespace: "default", Name: "echo", Port: 80})
	wantPolicy := topology.DefaultPolicy()
	wantPolicy.ChoiceCount = 3
	if diff := cmp.Diff(svc.Policy, wantPolicy); diff != "" {
		t.Errorf("policy (-got +want):\n%s", diff)
	}

	var got []convert.Problem
	for range 2 {
		got = append(got, <-h.problems)
	}
	want := []convert.Problem{
		{Namespace: "default", Object: "EndpointSlice default/stray", Reason: convert.ReasonMissingServiceLabel,
			Message: "the EndpointSlice has no kubernetes.io/service-name label; skipping it"},
		{Namespace: "default", Service: "echo", Object: "Service default/echo", Reason: convert.ReasonInvalidAnnotation,
			Message: `annotation fairway.io/lb-policy: invalid value "fastest" (want least_request, round_robin, random, weighted_round_robin or ring_hash); using default least_request`},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("problems (-got +want):\n%s", diff)
	}
	for _, reason := range []string{convert.ReasonMissingServiceLabel, convert.ReasonInvalidAnnotation} {
		if n := h.logs.count("reason=" + reason); n != 1 {
			t.Errorf("%d log lines with reason=%s, want 1", n, reason)
		}
		if got := testkit.MetricValue(t, h.reg, "fairway_source_problems_total", "source", "file", "reason", reason); got != 1 {
			t.Errorf("fairway_source_problems_total{reason=%q} = %v, want 1", reason, got)
		}
	}
	if n := h.logs.count("skipping an object of another kind"); n != 1 {
		t.Errorf("%d debug lines for the Deployment, want 1", n)
	}
}

// TestSource_SharedRegistry checks that two sources can count into one
// registry.
func TestSource_SharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := New("a.yaml", WithRegisterer(reg))
	b := New("b.yaml", WithRegisterer(reg))
	if a.problems != b.problems {
		t.Errorf("the second source did not reuse the registered counter")
	}
}

// TestSource_BusyFolder checks that a folder that never goes quiet (another
// file rewritten every few milliseconds) delays a change by at most the
// debounce cap.
func TestSource_BusyFolder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "world.yaml")
	write(t, path, svcYAML("echo", "10.0.0.1"))
	h := start(t, path)
	checkWorld(t, h.next(t), map[string][]string{"echo.default:80": {"10.0.0.1:8080"}})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = os.WriteFile(filepath.Join(dir, "noise"), []byte(fmt.Sprint(i)), 0o644)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	replaced := time.Now()
	replace(t, path, svcYAML("echo", "10.0.0.2"))
	s := h.next(t)
	t.Logf("change in a busy folder served after %v", time.Since(replaced))
	checkWorld(t, s, map[string][]string{"echo.default:80": {"10.0.0.2:8080"}})
}

// TestSource_ServesOnlyWhatKubernetesAccepts is issue 10, finding 6: the file
// source served endpoint ports 70000, -5 (as 4294967291) and 0, Service ports
// 0, -1 and 70000, empty names and names with colons, and both a.b/c and
// a/b.c as a.b.c:80. Each is now a problem, left out, and the rest is
// served.
func TestSource_ServesOnlyWhatKubernetesAccepts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.yaml")
	var b strings.Builder
	b.WriteString(svcYAML("echo", "10.0.0.1"))
	b.WriteString(`---
apiVersion: v1
kind: Service
metadata: {name: ports, namespace: default}
spec:
  ports: [{name: a, port: 80}, {name: b, port: 81}, {name: c, port: 82}, {name: zero, port: 0}, {name: neg, port: -1}, {name: big, port: 70000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ports-1, namespace: default, labels: {kubernetes.io/service-name: ports}}
addressType: IPv4
ports: [{name: a, port: 70000}, {name: b, port: -5}, {name: c, port: 0}]
endpoints: [{addresses: [10.0.0.2]}]
`)
	for _, nsName := range [][2]string{{"default", `""`}, {"default", `"a:b"`}, {"c", "a.b"}, {"b.c", "a"}} {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata: {namespace: %s, name: %s}\nspec: {ports: [{port: 80}]}\n", nsName[0], nsName[1])
	}
	write(t, path, b.String())
	h := start(t, path)
	checkWorld(t, h.next(t), map[string][]string{
		"echo.default:80":  {"10.0.0.1:8080"},
		"ports.default:80": {},
		"ports.default:81": {},
		"ports.default:82": {},
	})
	for reason, n := range map[string]float64{convert.ReasonInvalidPort: 6, convert.ReasonInvalidName: 4} {
		if got := testkit.MetricValue(t, h.reg, "fairway_source_problems_total", "source", "file", "reason", reason); got != n {
			t.Errorf("fairway_source_problems_total{reason=%q} = %v, want %v", reason, got, n)
		}
	}
}
