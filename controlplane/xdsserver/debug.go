package xdsserver

import (
	"cmp"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fairway-lb/fairway/wire"
)

// maxDebugNames is how many resource names of one type a stream's state
// keeps for /debug/clients; the count goes on past it.
const maxDebugNames = 100

// ConfigDump is the body of /debug/config_dump: the resources the server
// serves, by type in push order, each type's by name.
type ConfigDump struct {
	Types []TypeDump `json:"types"`
}

// TypeDump is the resources of one type in a ConfigDump.
type TypeDump struct {
	Type      string         `json:"type"` // cluster, endpoint, listener or route
	TypeURL   string         `json:"type_url"`
	Resources []ResourceDump `json:"resources"`
}

// ResourceDump is one resource in a ConfigDump, as protojson.
type ResourceDump struct {
	Name     string          `json:"name"`
	Resource json.RawMessage `json:"resource"`
}

// ClientsDump is the body of /debug/clients: the open xDS streams.
type ClientsDump struct {
	Streams []StreamDump `json:"streams"`
}

// StreamDump is one open xDS stream in a ClientsDump.
type StreamDump struct {
	Stream   int64  `json:"stream"`   // go-control-plane's stream id (per protocol)
	Protocol string `json:"protocol"` // sotw or delta
	NodeID   string `json:"node_id"`
	Zone     string `json:"zone,omitempty"` // node.locality.zone of its first node
	// Namespace, ServiceAccount and Auth are the stream's identity (Auth:
	// how it was established); all empty for a stream without one, which
	// sees every service.
	Namespace      string             `json:"namespace,omitempty"`
	ServiceAccount string             `json:"service_account,omitempty"`
	Auth           string             `json:"auth,omitempty"`
	Subscriptions  []SubscriptionDump `json:"subscriptions"`
}

// SubscriptionDump is what one stream holds of one type.
type SubscriptionDump struct {
	Type    string `json:"type"`
	TypeURL string `json:"type_url"`
	// Names are the names subscribed to, at most maxDebugNames of them
	// (sorted); NameCount counts them all ("*": the wildcard).
	Names     []string `json:"names"`
	NameCount int      `json:"name_count"`
	// SentVersion is the version of the last response sent; AckedVersion
	// the last the client accepted, NackedVersion the last it rejected,
	// with the client's error_detail message in NackError.
	SentVersion   string `json:"sent_version,omitempty"`
	AckedVersion  string `json:"acked_version,omitempty"`
	NackedVersion string `json:"nacked_version,omitempty"`
	NackError     string `json:"nack_error,omitempty"`
}

// typeDebug is a stream's state of one type for /debug/clients, guarded by
// Server.streamsMu.
type typeDebug struct {
	requested bool            // a request of the type was seen
	names     map[string]bool // at most maxDebugNames
	nameCount int             // SotW: the last request's names; delta: the subscribed names (exact with a names limit, else estimated past the cap)
	acked     string
	nacked    string
	nackErr   string
}

// sentResponse is the version and nonce of a response.
type sentResponse struct{ version, nonce string }

// streamSent is, by type URL, the last response sent on a stream. It has a
// lock of its own, a leaf (taken after Server.streamsMu when both are), so
// that recording a response takes no server-wide lock: Server.sent finds it
// by stream without one.
type streamSent struct {
	mu     sync.Mutex
	byType map[string]sentResponse // guarded by mu
}

// get returns the last response of typeURL sent on the stream.
func (ss *streamSent) get(typeURL string) sentResponse {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.byType[typeURL]
}

// set records a response of typeURL sent on the stream.
func (ss *streamSent) set(typeURL string, r sentResponse) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.byType == nil {
		ss.byType = map[string]sentResponse{}
	}
	ss.byType[typeURL] = r
}

// debugRequestLocked records req, a request of a served type, in st's
// state for /debug/clients; same: a SotW request repeating the names of
// the stream's last one of the type. s.streamsMu is held.
func debugRequestLocked(st *streamState, sid streamID, req streamRequest, same bool) {
	if st.zone == "" && st.nodeID != "" {
		st.zone = req.node.GetLocality().GetZone()
	}
	d := st.debugLocked(req.typeURL)
	first := !d.requested
	d.requested = true
	switch {
	case sid.protocol == protoSotW && same && len(req.names) > 0:
		// the names kept are those of the last request
	case sid.protocol == protoSotW:
		d.names = map[string]bool{}
		d.nameCount = len(req.names)
		if len(req.names) == 0 && first {
			d.nameCount, d.names["*"] = 1, true // wildcard
		}
		for _, n := range req.names[:min(len(req.names), maxDebugNames)] {
			d.names[n] = true
		}
	default:
		for _, n := range req.names {
			if d.names[n] {
				continue
			}
			d.nameCount++
			if len(d.names) < maxDebugNames {
				d.names[n] = true
			}
		}
		for _, n := range req.unsubscribe {
			if d.names[n] || d.nameCount > len(d.names) { // past the cap: maybe one not kept
				d.nameCount--
			}
			delete(d.names, n)
		}
		// With a names limit the stream keeps its exact set (subscribeLocked);
		// past maxDebugNames the count above is an estimate otherwise.
		if set, ok := st.delta[req.typeURL]; ok {
			d.nameCount = len(set)
		}
	}
	if req.nonce == "" {
		return
	}
	sent := st.sent.get(req.typeURL)
	switch {
	case req.nack():
		d.nacked, d.nackErr = req.version, nackError(req)
		if req.nonce == sent.nonce {
			d.nacked = sent.version
		}
	case req.nonce == sent.nonce:
		d.acked = sent.version
	case req.version != "":
		d.acked = req.version
	}
}

// debugLocked returns st's debug state of typeURL, creating it.
// Server.streamsMu is held.
func (st *streamState) debugLocked(typeURL string) *typeDebug {
	if st.debug == nil {
		st.debug = map[string]*typeDebug{}
	}
	d := st.debug[typeURL]
	if d == nil {
		d = &typeDebug{names: map[string]bool{}}
		st.debug[typeURL] = d
	}
	return d
}

// responded records a response sent on a stream, for /debug/clients.
// Called from the stream's goroutine; it takes the stream's lock only.
func (s *Server) responded(sid streamID, typeURL, version, nonce string) {
	if _, served := s.caches[typeURL]; !served {
		return
	}
	if ss, ok := s.sent.Load(sid); ok {
		ss.(*streamSent).set(typeURL, sentResponse{version, nonce})
	}
}

// Clients returns the open streams, by protocol then stream id.
func (s *Server) Clients() ClientsDump {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	out := ClientsDump{Streams: []StreamDump{}}
	for _, sid := range slices.SortedFunc(maps.Keys(s.streams), func(a, b streamID) int {
		if c := cmp.Compare(a.protocol, b.protocol); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	}) {
		st := s.streams[sid]
		sd := StreamDump{Stream: sid.id, Protocol: sid.protocol, NodeID: st.nodeID, Zone: st.zone, Subscriptions: []SubscriptionDump{},
			Namespace: st.identity.Namespace, ServiceAccount: st.identity.ServiceAccount, Auth: st.identity.Method}
		for _, t := range typeURLs {
			d, sent := st.debug[t], st.sent.get(t)
			if d == nil {
				if sent == (sentResponse{}) {
					continue
				}
				d = &typeDebug{}
			}
			sd.Subscriptions = append(sd.Subscriptions, SubscriptionDump{
				Type: typeLabel(t), TypeURL: t, Names: slices.Sorted(maps.Keys(d.names)), NameCount: d.nameCount,
				SentVersion: sent.version, AckedVersion: d.acked, NackedVersion: d.nacked, NackError: d.nackErr,
			})
		}
		out.Streams = append(out.Streams, sd)
	}
	return out
}

// ConfigDump returns the resources in the caches whose type matches typ
// (a type label such as "cluster", or a type URL; "" for every type) and
// whose name matches name ("" for every name; else the name itself, or any
// name of the same service, so that "echo.default:8080" also finds the
// Listener "echo.default.svc.cluster.local:8080").
func (s *Server) ConfigDump(typ, name string) (ConfigDump, error) {
	return s.configDump(typ, name, "", true)
}

// ConfigDumpFor is ConfigDump of what a client of namespace ns sees.
func (s *Server) ConfigDumpFor(ns, typ, name string) (ConfigDump, error) {
	return s.configDump(typ, name, ns, false)
}

func (s *Server) configDump(typ, name, ns string, all bool) (ConfigDump, error) {
	out := ConfigDump{Types: []TypeDump{}}
	for _, t := range typeURLs {
		if typ != "" && typ != t && typ != typeLabel(t) {
			continue
		}
		td := TypeDump{Type: typeLabel(t), TypeURL: t, Resources: []ResourceDump{}}
		res := s.views.resourcesOf(t, ns, all)
		for _, n := range slices.Sorted(maps.Keys(res)) {
			if !nameMatches(n, name) {
				continue
			}
			raw, err := marshalResource(res[n])
			if err != nil {
				return ConfigDump{}, err
			}
			td.Resources = append(td.Resources, ResourceDump{Name: n, Resource: raw})
		}
		out.Types = append(out.Types, td)
	}
	return out, nil
}

func marshalResource(r types.Resource) (json.RawMessage, error) {
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(proto.Message(r))
}

// nameMatches reports whether resource name n is asked for by filter.
func nameMatches(n, filter string) bool {
	if filter == "" || n == filter {
		return true
	}
	a, err := wire.ParseResourceName(n)
	if err != nil {
		return false
	}
	b, err := wire.ParseResourceName(filter)
	return err == nil && a == b
}

// debugHandlers adds /debug/config_dump and /debug/clients to mux.
func (s *Server) debugHandlers(mux *http.ServeMux) {
	mux.HandleFunc("/debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		dump, err := s.configDump(q.Get("type"), q.Get("name"), q.Get("namespace"), q.Get("namespace") == "")
		if err != nil {
			http.Error(w, "fairway/xdsserver: "+err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, dump)
	})
	mux.HandleFunc("/debug/clients", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, s.Clients())
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
