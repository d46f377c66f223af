package xdsserver

import (
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"k8s.io/utils/clock"
)

// A NACK (a request carrying error_detail) leaves the client on the last
// version it accepted, and the stream gets nothing more for the type until
// the resources it rejected change. How go-control-plane v0.14 gets there:
//
//   - The server records, when it sends a response, the versions it sent as
//     the versions the client knows (Subscription.ReturnedResources), ACKed
//     or not, and a LinearCache answers a request at once only when a
//     subscribed resource differs from them, or when the request carries no
//     version_info, which it reads as a client that holds nothing yet and
//     must be answered even with nothing new.
//   - Delta: a NACK carries the rejected response's nonce, so it is never
//     such a first request; the cache waits for a change. Nothing to do.
//   - SotW: a client that rejects its first response of a type NACKs with
//     the version it last accepted, "", and was answered at once with the
//     same resources, which it rejected again, as fast as the network
//     allowed. nackCache gives such a NACK the version rejectedVersion
//     instead, so the cache compares the subscription with what it sent and
//     waits for a change. A NACK of a later response carries a version and
//     goes through as is.

// rejectedVersion is the version_info nackCache gives a SotW NACK that
// carries none. Any non-empty version will do: the LinearCaches have no
// version prefix (New), so the cache reads it as "the client holds a
// version" and decides by the versions the stream was sent.
const rejectedVersion = "rejected"

// nackCache is the server's cache (the MuxCache of LinearCaches) with the
// SotW NACK of a stream's first response of a type waiting for a change
// (see above). go-control-plane calls it from each stream's goroutine; it
// holds no lock of its own and the request it is given stays untouched.
type nackCache struct {
	cachev3.Cache
}

// CreateWatch is Cache.CreateWatch with a NACK carrying no version_info
// read as a NACK of what the stream was sent.
func (c nackCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if req.GetErrorDetail() != nil && req.GetVersionInfo() == "" {
		node := req.GetNode() // the view's stamp, found by its pointer (views.go)
		req = proto.Clone(req).(*cachev3.Request)
		req.VersionInfo, req.Node = rejectedVersion, node
	}
	return c.Cache.CreateWatch(req, sub, out)
}

// nacked counts and logs a NACK: the first NACK of a response (by stream,
// type and response nonce) counts in fairway_xds_nacks_total and goes to
// the NACK log (nackLog: one warn line per rejected version and type); a
// request repeating it logs at debug level only. rejected is the version of
// the response it names ("" when not the stream's last of the type).
func (s *Server) nacked(sid streamID, nodeID, rejected string, req streamRequest, first bool) {
	attrs := []any{"stream", sid.id, "protocol", sid.protocol, "type", typeLabel(req.typeURL),
		"nonce", req.nonce, "accepted_version", req.version, "names", len(req.names),
		"examples", req.names[:min(len(req.names), unknownExamples)], "error", nackError(req)}
	if !first {
		s.log.Debug("xDS client repeated a NACK", append(attrs, "node", nodeID)...)
		return
	}
	s.metrics.nacks.WithLabelValues(typeLabel(req.typeURL)).Inc()
	s.nacks.add(nackKey{req.typeURL, rejected}, nodeID, attrs)
}

// nackLogWindow is how long the NACK log gathers the NACKs of one version
// and type before its warn line.
const nackLogWindow = time.Second

// nackNodeExamples is how many node ids a NACK warn line names.
const nackNodeExamples = 5

// nackKey is what NACKs are gathered by: the type and the version rejected.
type nackKey struct{ typeURL, version string }

// nackBatch is the NACKs of one key gathered in a window.
type nackBatch struct {
	streams int      // NACKs gathered (one per stream and response)
	nodes   []string // their node ids, at most nackNodeExamples
	attrs   []any    // of the first
	timer   clock.Timer
}

// nackLog writes one warn line per rejected version and type: the first
// NACK of a key opens a window of nackLogWindow in which the NACKs of that
// key are gathered (each logged at debug level), and its end writes the
// first's details with the number of streams and a few node ids. Later
// NACKs of the last version warned about for a type log at debug level
// only, so that one bad push to N subscribers gives one line, not N. Called
// from the streams' goroutines; its lock is a leaf, never held while
// calling the clock (whose fake's timers call flush under its own lock).
type nackLog struct {
	// immutable
	log   *slog.Logger
	clock clock.WithDelayedExecution

	mu      sync.Mutex
	pending map[nackKey]*nackBatch // guarded by mu
	warned  map[string]string      // guarded by mu: type URL → the version last warned about
}

func newNACKLog(log *slog.Logger, c clock.WithDelayedExecution) *nackLog {
	return &nackLog{log: log, clock: c, pending: map[nackKey]*nackBatch{}, warned: map[string]string{}}
}

// add gathers the NACK of a stream of node nodeID; attrs describe it.
func (n *nackLog) add(key nackKey, nodeID string, attrs []any) {
	n.mu.Lock()
	if v, ok := n.warned[key.typeURL]; ok && v == key.version && key.version != "" {
		n.mu.Unlock()
		n.log.Debug("xDS client rejected a response (NACK) of a version already warned about", append(attrs, "node", nodeID, "version", key.version)...)
		return
	}
	if b := n.pending[key]; b != nil {
		b.streams++
		if len(b.nodes) < nackNodeExamples && !slices.Contains(b.nodes, nodeID) {
			b.nodes = append(b.nodes, nodeID)
		}
		n.mu.Unlock()
		n.log.Debug("xDS client rejected a response (NACK); gathered for one warn line", append(attrs, "node", nodeID, "version", key.version)...)
		return
	}
	b := &nackBatch{streams: 1, nodes: []string{nodeID}, attrs: attrs}
	n.pending[key] = b
	n.mu.Unlock()
	t := n.clock.AfterFunc(nackLogWindow, func() { n.flush(key, b) })
	n.mu.Lock()
	b.timer = t
	n.mu.Unlock()
}

// flush writes the warn line of batch b of key, unless written already.
func (n *nackLog) flush(key nackKey, b *nackBatch) {
	n.mu.Lock()
	if n.pending[key] != b {
		n.mu.Unlock()
		return
	}
	line := n.takeLocked(key, b)
	n.mu.Unlock()
	line()
}

// takeLocked ends the window of batch b of key and returns the writing of
// its line. n.mu is held.
func (n *nackLog) takeLocked(key nackKey, b *nackBatch) (line func()) {
	delete(n.pending, key)
	n.warned[key.typeURL] = key.version
	attrs := append(slices.Clip(b.attrs), "version", key.version, "streams", b.streams, "nodes", slices.Clone(b.nodes))
	return func() {
		n.log.Warn("xDS clients rejected a response (NACK); they get nothing more for the type until the resources change", attrs...)
	}
}

// close writes the lines of the windows still open and stops their timers.
func (n *nackLog) close() {
	n.mu.Lock()
	var lines []func()
	var timers []clock.Timer
	for key, b := range n.pending {
		if b.timer != nil {
			timers = append(timers, b.timer)
		}
		lines = append(lines, n.takeLocked(key, b))
	}
	n.mu.Unlock()
	for _, t := range timers {
		t.Stop()
	}
	for _, line := range lines {
		line()
	}
}

// maxNACKError is how much of a client's error_detail the server keeps and
// logs: the message is the client's to choose, of any length.
const maxNACKError = 1024

// nackError is req's error_detail message, cut to maxNACKError bytes (on a
// rune boundary, with "…" when cut).
func nackError(req streamRequest) string {
	m := req.errorDetail.GetMessage()
	if len(m) <= maxNACKError {
		return m
	}
	cut := maxNACKError
	for cut > 0 && !utf8.RuneStart(m[cut]) {
		cut--
	}
	return m[:cut] + "…"
}
