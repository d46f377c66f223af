package xdsserver

import (
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// SetTranslateLoadAssignment replaces the translation of
// ClusterLoadAssignments until the returned function is called.
func SetTranslateLoadAssignment(f func(*topology.Service) *endpointpb.ClusterLoadAssignment) (restore func()) {
	old := translateLoadAssignment
	translateLoadAssignment = f
	return func() { translateLoadAssignment = old }
}
