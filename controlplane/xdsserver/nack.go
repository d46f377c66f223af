package xdsserver

import (
	"unicode/utf8"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
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
// type and response nonce) counts in fairway_xds_nacks_total and logs at
// warn level with the client's error_detail; a request repeating it logs
// at debug level only.
func (s *Server) nacked(sid streamID, nodeID string, req streamRequest, first bool) {
	attrs := []any{"node", nodeID, "stream", sid.id, "protocol", sid.protocol, "type", typeLabel(req.typeURL),
		"nonce", req.nonce, "accepted_version", req.version, "names", len(req.names),
		"examples", req.names[:min(len(req.names), unknownExamples)], "error", nackError(req)}
	if !first {
		s.log.Debug("xDS client repeated a NACK", attrs...)
		return
	}
	s.metrics.nacks.WithLabelValues(typeLabel(req.typeURL)).Inc()
	s.log.Warn("xDS client rejected a response (NACK); it gets nothing more for the type until the resources change", attrs...)
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
