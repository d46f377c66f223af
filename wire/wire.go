// Package wire is Fairway's contract between the control plane and its
// clients, in one place that both sides import: the xDS resource names of a
// service port, the keys of the Fairway metadata a Cluster and an endpoint
// carry, the client features a node declares, and the shape of a strategy
// chain. It is a leaf: it imports neither Kubernetes, Envoy nor gRPC, and
// nothing under controlplane/ or client/.
//
// The control plane takes xDS type URLs from go-control-plane's resource/v3.
// The two a Fairway client subscribes to are repeated here (ClusterType,
// EndpointType; a test checks they equal resource/v3's) because importing
// resource/v3 links the Listener, RouteConfiguration and
// HttpConnectionManager protos into every client binary, which never decodes
// them (about 4.6 MB).
package wire

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ServiceKey names one port of one Kubernetes Service.
type ServiceKey struct {
	Namespace string
	Name      string
	Port      int32 // the Service port number (not the target port)
}

// ClusterDomain is the DNS suffix of the FQDN resource names.
const ClusterDomain = "svc.cluster.local"

// ResourceName is the xDS resource name of the service port,
// "NAME.NAMESPACE:PORT". The Cluster, ClusterLoadAssignment, Listener and
// RouteConfiguration of a service port all carry this name.
func (k ServiceKey) ResourceName() string {
	return k.Name + "." + k.Namespace + ":" + strconv.Itoa(int(k.Port))
}

// FQDNResourceName is the second Listener name a service port answers to,
// "NAME.NAMESPACE.svc.cluster.local:PORT".
func (k ServiceKey) FQDNResourceName() string {
	return k.Name + "." + k.Namespace + "." + ClusterDomain + ":" + strconv.Itoa(int(k.Port))
}

func (k ServiceKey) String() string { return k.ResourceName() }

// ParseResourceName parses "NAME.NAMESPACE:PORT" or
// "NAME.NAMESPACE.svc.cluster.local:PORT" (also with a trailing dot after
// "local").
func ParseResourceName(s string) (ServiceKey, error) {
	host, portStr, ok := strings.Cut(s, ":")
	if !ok || host == "" || portStr == "" {
		return ServiceKey{}, fmt.Errorf("fairway/wire: resource name %q is not NAME.NAMESPACE:PORT", s)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return ServiceKey{}, fmt.Errorf("fairway/wire: resource name %q: port %q is not a number in 1-65535", s, portStr)
	}
	host = strings.TrimSuffix(host, ".")
	host = strings.TrimSuffix(host, "."+ClusterDomain)
	name, ns, ok := strings.Cut(host, ".")
	if !ok || name == "" || ns == "" || strings.Contains(ns, ".") {
		return ServiceKey{}, fmt.Errorf("fairway/wire: resource name %q is not NAME.NAMESPACE:PORT", s)
	}
	return ServiceKey{Namespace: ns, Name: name, Port: int32(port)}, nil
}

// Type URLs of the resources a Fairway client subscribes to, equal to
// go-control-plane's resourcev3.ClusterType and resourcev3.EndpointType.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// MetadataNamespace is the filter_metadata key under which Fairway puts its
// fields, on a Cluster (MetadataStrategy, MetadataCallerZones) and on an
// LbEndpoint (MetadataLabels).
const MetadataNamespace = "fairway.io"

// Fields of the Fairway metadata.
const (
	// MetadataStrategy (Cluster) is the service's strategy chain: a JSON
	// array as a string, or a list (see ParseChain).
	MetadataStrategy = "strategy"
	// MetadataCallerZones (Cluster) maps each zone to the fraction of the
	// service's callers in it, a number in [0, 1]. Sent only to nodes that
	// declare CallerZonesFeature.
	MetadataCallerZones = "caller_zones"
	// MetadataLabels (LbEndpoint) holds the pod's routing labels as a
	// string-to-string object.
	MetadataLabels = "labels"
)

// CallerZonesFeature is the xDS client feature (node.client_features) of a
// client that balances by its callers' zones: the control plane counts only
// such nodes as callers and sends MetadataCallerZones only to them.
const CallerZonesFeature = "io.fairway.caller_zones"

// MaxHashHeaderLen bounds the length of a ring_hash request header name.
const MaxHashHeaderLen = 128

// ValidateHashHeader checks that v can be ring_hash's request header (the
// route's header hash policy): a lowercase HTTP header name of at most
// MaxHashHeaderLen letters, digits, '-', '_' and '.' (what gRPC metadata keys
// allow), neither a binary header ("-bin" suffix, which gRPC clients never
// hash on) nor a reserved "grpc-" one. The empty string stands for the
// default header and is valid.
func ValidateHashHeader(v string) error {
	if len(v) > MaxHashHeaderLen {
		return fmt.Errorf("fairway/wire: hash header is %d bytes long, want at most %d", len(v), MaxHashHeaderLen)
	}
	for _, c := range v {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("fairway/wire: hash header: want a lowercase HTTP header name (a-z, 0-9, '-', '_', '.'), found %q", c)
		}
	}
	switch {
	case strings.HasSuffix(v, "-bin"):
		return errors.New("fairway/wire: hash header: a binary (-bin) header, which gRPC clients do not hash on")
	case strings.HasPrefix(v, "grpc-"):
		return errors.New("fairway/wire: hash header: a reserved grpc- header")
	}
	return nil
}
