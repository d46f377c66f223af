package xdsserver

import (
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// WithPushHook makes the push goroutine call f before each push (tests
// block it there to stall the push loop).
func WithPushHook(f func()) Option { return func(o *options) { o.pushHook = f } }

// SetTranslateLoadAssignment replaces the translation of
// ClusterLoadAssignments until the returned function is called.
func SetTranslateLoadAssignment(f func(*topology.Service) *endpointpb.ClusterLoadAssignment) (restore func()) {
	old := translateLoadAssignment
	translateLoadAssignment = f
	return func() { translateLoadAssignment = old }
}
