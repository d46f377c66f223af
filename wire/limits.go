package wire

// MaxMessageSize is the largest xDS response the control plane sends and the
// largest a Fairway client accepts by default: 64 MiB, both sides, so that
// whatever the server may send, the client can take.
//
// Why 64 MiB. The largest response is the SotW ClusterLoadAssignment answer
// to a client that (re)subscribes to many services at once, or to one huge
// service: it carries every subscribed endpoint. An endpoint costs about 51
// bytes on the wire (address, port, zone, pod name, health, weight; measured:
// 100,000 endpoints in one service are 5.1 MB), a few tens more with labels.
// Kubernetes' large-cluster limits stop at 150,000 pods: a client subscribed
// to every endpoint of such a cluster receives about 8 to 15 MB. 64 MiB
// leaves four times that and more, and costs nothing until used (a limit, not
// a buffer). gRPC's stock 4 MiB default (which the Fairway client had, and
// which grpc-go's proxyless xDS client still has) froze a client at 82,000
// endpoints.
const MaxMessageSize = 64 << 20
