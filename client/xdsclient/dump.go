package xdsclient

import (
	"maps"
	"slices"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// Status is what the client holds of a subscribed resource, as CSDS
// (envoy.admin.v3.ClientResourceStatus) names it.
type Status string

// The statuses of a subscribed resource.
const (
	// Requested: subscribed, no valid version received yet (or the
	// Cluster was removed).
	Requested Status = "REQUESTED"
	// ACKed: the last version received was accepted.
	ACKed Status = "ACKED"
	// NACKed: the last version received was rejected; the previous valid
	// one, if any, stays in use.
	NACKed Status = "NACKED"
)

// ResourceStatus is one subscribed resource as the client holds it.
type ResourceStatus struct {
	TypeURL string // wire.ClusterType or wire.EndpointType
	Name    string
	Status  Status
	// Version is the version_info of the response that carried Resource,
	// the version in use; Updated is when it came. Empty and zero before
	// a valid version arrives.
	Version  string
	Updated  time.Time
	Resource proto.Message // the resource in use; nil before one arrives. Never mutated.
	// For NACKed: the rejected version, why, and when.
	FailedVersion string
	Error         string
	FailedAt      time.Time
}

// Dump returns every subscribed resource, Clusters then
// ClusterLoadAssignments, each sorted by name. Safe for concurrent use.
func (c *Client) Dump() []ResourceStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ResourceStatus
	for _, t := range subscriptionTypes {
		for _, name := range slices.Sorted(maps.Keys(c.resources[t])) {
			out = append(out, c.resources[t][name].status(t, name))
		}
	}
	return out
}

// status is rs as a ResourceStatus. Client.mu is held.
func (rs *resourceState) status(typeURL, name string) ResourceStatus {
	st := ResourceStatus{TypeURL: typeURL, Name: name, Status: Requested, Resource: rs.raw}
	if rs.raw != nil {
		st.Status, st.Version, st.Updated = ACKed, rs.version, rs.updated
	}
	if r := rs.rejected; r != nil {
		st.Status, st.FailedVersion, st.Error, st.FailedAt = NACKed, r.version, r.err, r.at
	}
	return st
}

// Node returns the node the client presents to the control plane. The
// caller must not mutate it.
func (c *Client) Node() *corepb.Node { return c.node }
