// Package client is the one-line adoption surface of Fairway's gRPC client
// library: request-level, client-side load balancing straight to pod IPs,
// fed by the Fairway control plane over xDS.
//
// Either import the package for its side effect and dial a fairway:/// target:
//
//	import _ "github.com/fairway-lb/fairway/client"
//
//	conn, err := grpc.NewClient("fairway:///echo.default:8080",
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// which takes the control-plane addresses from FAIRWAY_XDS_ADDR
// (comma-separated) and the caller's zone from FAIRWAY_ZONE, falling back to
// the Kubernetes downward API (see PodInfoLabelsFile); or, without relying on
// globals, pass the dial option:
//
//	conn, err := grpc.NewClient("fairway:///echo.default:8080",
//		grpc.WithTransportCredentials(insecure.NewCredentials()),
//		client.WithFairway(client.WithXDSServers("fairway-xds.fairway-system:18000"), client.WithZone("zone-a")))
//
// Targets are fairway:///NAME.NAMESPACE:PORT or
// fairway:///NAME.NAMESPACE.svc.cluster.local:PORT, PORT being the Service
// port. The environment is read each time a channel's resolver is built (when
// the channel first leaves idle), never at init, so tests may set it first.
//
// Importing the package registers the "fairway" resolver scheme
// (client/resolver) and the "fairway" balancer with its strategies
// (client/balancer). All channels of a process using the same control-plane
// address list share one xDS client, hence one ADS stream
// (client/xdsclient); it is closed when the last of those channels closes.
// Its node identity is FAIRWAY_NODE_ID, else POD_NAMESPACE/POD_NAME, else
// HOSTNAME-PID, with the caller's zone as locality and NODE_NAME in its
// metadata; the metrics registry and the xDS dial options (TLS, receive
// limit, keepalive: WithXDSDialOptions) of the channel that created the
// shared client are its own.
//
// A Cluster whose strategy chain the balancer rejects is NACKed by the shared
// client and the previous chain stays in force (see ValidateStrategy).
//
// For inspection, RegisterCSDS serves CSDS (what every shared xDS client
// holds: versions, ACKED/NACKED, errors) on the application's gRPC server,
// and DebugHandler the balancers' endpoints as JSON; `fairway inspect
// --client` reads both (docs/operations.md).
package client
