package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	adminpb "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statuspb "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fairway-lb/fairway/client/balancer"
	"github.com/fairway-lb/fairway/client/xdsclient"
)

// RegisterCSDS registers the Client Status Discovery Service
// (envoy.service.status.v3.ClientStatusDiscoveryService) on s: both
// FetchClientStatus and StreamClientStatus answer with one ClientConfig per
// shared xDS client of the process (one per control-plane address list,
// node id and zone; normally one), listing each subscribed Cluster and
// ClusterLoadAssignment with its version, status (REQUESTED, ACKED or
// NACKED), the resource in use and, after a NACK, the rejected version and
// the error. Query it with grpcdebug or `fairway inspect --client`.
//
// grpc-go's own CSDS (google.golang.org/grpc/xds/csds) registers the same
// service for grpc-go's xDS client: register one or the other on a server.
// node_matchers are not supported (InvalidArgument), as in grpc-go.
func RegisterCSDS(s grpc.ServiceRegistrar) {
	statuspb.RegisterClientStatusDiscoveryServiceServer(s, csdsServer{})
}

// csdsServer serves CSDS from the shared xDS clients.
type csdsServer struct {
	statuspb.UnimplementedClientStatusDiscoveryServiceServer
}

func (csdsServer) FetchClientStatus(_ context.Context, req *statuspb.ClientStatusRequest) (*statuspb.ClientStatusResponse, error) {
	return clientStatus(req)
}

func (csdsServer) StreamClientStatus(stream grpc.BidiStreamingServer[statuspb.ClientStatusRequest, statuspb.ClientStatusResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := clientStatus(req)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// clientStatus answers a CSDS request from the shared xDS clients.
func clientStatus(req *statuspb.ClientStatusRequest) (*statuspb.ClientStatusResponse, error) {
	if len(req.GetNodeMatchers()) > 0 {
		return nil, status.Error(codes.InvalidArgument, "fairway/client: CSDS node_matchers are not supported")
	}
	resp := &statuspb.ClientStatusResponse{}
	for _, c := range shared.all() {
		resp.Config = append(resp.Config, clientConfig(c))
	}
	return resp, nil
}

// clientConfig is one xDS client's CSDS ClientConfig.
func clientConfig(c *xdsclient.Client) *statuspb.ClientConfig {
	cfg := &statuspb.ClientConfig{Node: c.Node()}
	for _, rs := range c.Dump() {
		x := &statuspb.ClientConfig_GenericXdsConfig{
			TypeUrl: rs.TypeURL, Name: rs.Name, VersionInfo: rs.Version, ClientStatus: resourceStatus(rs.Status),
		}
		if rs.Resource != nil {
			x.XdsConfig, _ = anypb.New(rs.Resource) // a decoded resource always marshals
			x.LastUpdated = timestamppb.New(rs.Updated)
		}
		if rs.Status == xdsclient.NACKed {
			x.ErrorState = &adminpb.UpdateFailureState{
				LastUpdateAttempt: timestamppb.New(rs.FailedAt), Details: rs.Error, VersionInfo: rs.FailedVersion,
			}
		}
		cfg.GenericXdsConfigs = append(cfg.GenericXdsConfigs, x)
	}
	return cfg
}

func resourceStatus(s xdsclient.Status) adminpb.ClientResourceStatus {
	switch s {
	case xdsclient.ACKed:
		return adminpb.ClientResourceStatus_ACKED
	case xdsclient.NACKed:
		return adminpb.ClientResourceStatus_NACKED
	}
	return adminpb.ClientResourceStatus_REQUESTED
}

// EndpointJSON is one endpoint of a Fairway balancer as DebugHandler
// serves it (balancer.EndpointState with readable enums).
type EndpointJSON struct {
	Target          string            `json:"target"`
	Address         string            `json:"address"`
	Hostname        string            `json:"hostname,omitempty"`
	Zone            string            `json:"zone,omitempty"`
	Weight          uint32            `json:"weight"`
	EffectiveWeight float64           `json:"effective_weight"`
	Health          string            `json:"health"`
	Connectivity    string            `json:"connectivity"`
	Ready           bool              `json:"ready"`
	InFlight        int64             `json:"in_flight"`
	Picks           uint64            `json:"picks"`
	Finished        uint64            `json:"finished"`
	Failures        uint64            `json:"failures"`
	Codes           map[string]uint64 `json:"codes,omitempty"`
	LatencyMS       float64           `json:"latency_ms,omitempty"`
	Ejections       uint64            `json:"ejections,omitempty"`
	EjectedUntil    *time.Time        `json:"ejected_until,omitempty"`
	FirstSeen       time.Time         `json:"first_seen"`
}

// DebugHandler serves, as JSON, the endpoints of every live Fairway
// balancer of the process (balancer.Inspect), or of the one target named by
// ?target= (the channel's target endpoint, "echo.default:8080" for
// "fairway:///echo.default:8080"; 404 when no balancer serves it). Mount it
// on the application's admin server, e.g.
// mux.Handle("/debug/fairway/endpoints", client.DebugHandler()).
func DebugHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targets := balancer.Targets()
		if t := r.URL.Query().Get("target"); t != "" {
			targets = []string{t}
		}
		out := []EndpointJSON{}
		for _, t := range targets {
			eps, ok := balancer.Inspect(t)
			if !ok && r.URL.Query().Get("target") != "" {
				http.Error(w, "fairway/client: no Fairway balancer serves target "+t, http.StatusNotFound)
				return
			}
			for _, e := range eps {
				out = append(out, endpointJSON(t, e))
			}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
}

func endpointJSON(target string, e balancer.EndpointState) EndpointJSON {
	j := EndpointJSON{
		Target: target, Address: e.Address, Hostname: e.Hostname, Zone: e.Zone, Weight: e.Weight,
		EffectiveWeight: e.EffectiveWeight, Health: e.Health.String(), Connectivity: e.Connectivity.String(),
		Ready: e.Ready, InFlight: e.InFlight, Picks: e.Picks, Finished: e.Finished, Failures: e.Failures,
		Codes: e.Codes, LatencyMS: float64(e.Latency) / float64(time.Millisecond), Ejections: e.Ejections,
		FirstSeen: e.FirstSeen,
	}
	if !e.EjectedUntil.IsZero() {
		t := e.EjectedUntil
		j.EjectedUntil = &t
	}
	return j
}
