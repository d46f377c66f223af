// Package file is a topology.Source that reads Kubernetes Service and
// EndpointSlice objects from a YAML file (what `kubectl get -o yaml` prints)
// and follows its edits: for local use, demos and tests, with no cluster.
//
// The objects go through the same conversion as the Kubernetes source
// (package convert). The rules of the file:
//
//   - The file is read whole and replaces the world: a service missing from
//     it is gone.
//   - A file that cannot be decoded (a malformed YAML document, an object
//     that does not fit its kind) is rejected whole, logged with the
//     document's number, and the last good state keeps being served; so is
//     an empty file (0 bytes or only whitespace), which is never taken for
//     an empty world. A file whose documents hold no Service (say
//     `kind: List` with `items: []`) is an empty world and is served.
//   - Problems with single objects (an invalid annotation, an EndpointSlice
//     without its service label, ...) are logged, counted in
//     fairway_source_problems_total{source="file",reason} and skipped;
//     everything else is served.
//   - If the file is missing or invalid when Run starts, Run waits for a good
//     file (logging why) and calls the Sink for the first time only then: a
//     control plane never serves an empty world by mistake.
//
// The source watches the file's folder, not the file, so that replacing the
// file by rename (editors, `mv`) and Kubernetes ConfigMap volumes (which swap
// a "..data" symlink) are seen: any event in the folder re-reads the path
// after a short debounce, and the content's hash says whether anything
// changed. A slow periodic re-read catches lost events. Writers that want
// atomic updates should write a temporary file and rename it over the path.
package file

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/controlplane/convert"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/internal/promreg"
)

// Defaults of the options.
const (
	DefaultDebounce = 50 * time.Millisecond
	DefaultResync   = 5 * time.Second
	// maxDebounceWait bounds how long a stream of events can delay a read.
	maxDebounceWait = 500 * time.Millisecond
)

// ReasonMalformedFile is the fairway_source_problems_total reason of a file
// that cannot be decoded.
const ReasonMalformedFile = "MalformedFile"

// Source is a topology.Source fed by a YAML file. Create it with New.
type Source struct {
	// immutable after New
	path     string
	log      *slog.Logger
	reg      prometheus.Registerer
	problems *prometheus.CounterVec
	onProb   func(convert.Problem)
	debounce time.Duration
	resync   time.Duration
	export   topology.Export // convert.Options.DefaultExport
}

var _ topology.Source = (*Source)(nil)

// Option configures a Source.
type Option func(*Source)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// WithRegisterer registers the fairway_source_problems_total counter with r
// (default: not registered). If r already holds the counter (registered by
// another source), that one is used.
func WithRegisterer(r prometheus.Registerer) Option { return func(s *Source) { s.reg = r } }

// WithProblemHandler calls f, from Run's goroutine, with every problem found
// in a newly read file (after it is logged and counted). f must not block.
func WithProblemHandler(f func(convert.Problem)) Option { return func(s *Source) { s.onProb = f } }

// WithDebounce sets how long the folder must be quiet after an event before
// the file is read (default DefaultDebounce). A stream of events delays a
// read by at most 500ms.
func WithDebounce(d time.Duration) Option { return func(s *Source) { s.debounce = d } }

// WithDefaultExport sets the export of Services without a valid
// fairway.io/export-to annotation (convert.Options.DefaultExport; default
// topology.ExportAll, every namespace).
func WithDefaultExport(e topology.Export) Option { return func(s *Source) { s.export = e } }

// WithResync sets the period of the safety re-read (default DefaultResync).
func WithResync(d time.Duration) Option { return func(s *Source) { s.resync = d } }

// New returns a source reading path.
func New(path string, opts ...Option) *Source {
	s := &Source{
		path:     path,
		log:      slog.Default(),
		problems: promreg.SourceProblems(),
		debounce: DefaultDebounce,
		resync:   DefaultResync,
	}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With("component", "fairway/file")
	var err error
	if s.problems, err = promreg.Register(s.reg, s.problems); err != nil {
		s.log.Error("cannot register metrics", "error", err)
	}
	return s
}

// state is what Run knows between reads. Owned by Run's goroutine.
type state struct {
	read    bool              // sum is valid
	sum     [sha256.Size]byte // hash of the last content read (good or bad)
	readErr string            // last read error logged, to log each only once
	version uint64
	snap    *topology.Snapshot // last snapshot handed to the sink
}

// Run watches the file and calls sink.Update, from the calling goroutine, with
// a new snapshot whenever the served world changes; the first call comes
// after the first good read. It returns nil when ctx is done, or an error if
// the watcher cannot be created. Run may be called again after it returns;
// each call starts from scratch.
func (s *Source) Run(ctx context.Context, sink topology.Sink) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("fairway/file: watching %s: %w", s.path, err)
	}
	defer w.Close()
	dir := filepath.Dir(s.path)
	log := s.log.With("path", s.path)

	watchErr := ""
	watch := func() {
		if slices.Contains(w.WatchList(), dir) {
			return
		}
		if err := w.Add(dir); err != nil {
			if err.Error() != watchErr {
				log.Warn("cannot watch the folder; re-reading every resync period", "dir", dir, "resync", s.resync, "error", err)
				watchErr = err.Error()
			}
			return
		}
		if watchErr != "" {
			log.Info("watching the folder", "dir", dir)
		}
		watchErr = ""
	}

	st := &state{}
	watch()
	s.reload(log, st, sink, time.Now())

	resync := time.NewTicker(s.resync)
	defer resync.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var pending bool
	var firstEvent time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			log.Debug("folder event", "event", ev.String())
			now := time.Now()
			if !pending {
				pending, firstEvent = true, now
			}
			debounce.Reset(max(0, min(s.debounce, firstEvent.Add(maxDebounceWait).Sub(now))))
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// Events may have been lost (e.g. queue overflow): read soon.
			log.Warn("watch error; re-reading the file", "error", err)
			if !pending {
				pending, firstEvent = true, time.Now()
			}
			debounce.Reset(s.debounce)
		case <-debounce.C:
			pending = false
			s.reload(log, st, sink, firstEvent)
		case <-resync.C:
			watch()
			if !pending {
				s.reload(log, st, sink, time.Now())
			}
		}
	}
}

// reload reads the file and hands a new snapshot to sink if the served world
// changed. observed is when the change was first noticed.
func (s *Source) reload(log *slog.Logger, st *state, sink topology.Sink, observed time.Time) {
	data, err := os.ReadFile(s.path)
	if err != nil {
		if err.Error() != st.readErr {
			log.Warn("cannot read the file; "+keeping(st), "error", err)
			st.readErr = err.Error()
		}
		return
	}
	st.readErr = ""
	sum := sha256.Sum256(data)
	if st.read && sum == st.sum {
		return
	}
	st.read, st.sum = true, sum

	if len(bytes.TrimSpace(data)) == 0 {
		log.Warn("the file is empty; " + keeping(st))
		return
	}
	objs, err := Decode(data)
	if err != nil {
		s.problems.WithLabelValues("file", ReasonMalformedFile).Inc()
		log.Error("rejecting the file; "+keeping(st), "reason", ReasonMalformedFile, "error", err)
		return
	}
	for _, k := range objs.Skipped {
		log.Debug("skipping an object of another kind", "object", k)
	}

	services, problems := convert.All(objs.Services, objs.EndpointSlices, convert.Options{DefaultExport: s.export})
	for _, p := range problems {
		s.problems.WithLabelValues("file", p.Reason).Inc()
		log.Warn(p.Message, "reason", p.Reason, "object", p.Object, "namespace", p.Namespace, "service", p.Service)
		if s.onProb != nil {
			s.onProb(p)
		}
	}

	changed := st.snap == nil || st.snap.Len() != len(services)
	for i, svc := range services {
		if st.snap == nil {
			break
		}
		if old, ok := st.snap.Service(svc.Key); ok && old.Equal(svc) {
			services[i] = old // unchanged: share the pointer so downstream diffing is cheap
		} else {
			changed = true
		}
	}
	if !changed {
		log.Debug("the file changed but the world did not")
		return
	}
	st.version++
	st.snap = topology.NewSnapshot(st.version, observed, services)
	log.Info("serving the file", "version", st.version, "services", len(services), "problems", len(problems))
	sink.Update(st.snap)
}

func keeping(st *state) string {
	if st.snap == nil {
		return "nothing is served until the file is good"
	}
	return fmt.Sprintf("keeping the last good state (version %d)", st.version)
}
