package wire

// Server-reported load. A backend reports its load to Fairway clients in
// standard ORCA load reports (xds.data.orca.v3.OrcaLoadReport), which
// grpc-go's orca package, and ORCA implementations in other languages,
// send in two ways: per call, in the "endpoint-load-metrics-bin" trailer of
// every RPC (including a unary grpc.health.v1.Health/Check, which a client
// may send as a probe), and out of band, on the
// xds.service.orca.v3.OpenRcaService/StreamCoreMetrics stream a client
// opens on each connection.
//
// The field the load_aware strategy balances on is a named metric:
//
//	named_metrics["rif"]: requests in flight at the backend when the report
//	                      was made (a count >= 0; RPCs of the ORCA service
//	                      and health checks are not counted)
//
// and, optionally,
//
//	named_metrics["latency_ms"]: the mean latency, in milliseconds, of the
//	                             calls the backend completed recently
//
// which a latency-aware client folds into its own latency estimate. A
// report without "rif" gives no RIF; negative or NaN values are ignored.
// The utilization fields (application_utilization, cpu_utilization), qps
// and eps are what grpc-go's weighted_round_robin reads; a backend may send
// them too, load_aware does not need them. grpc-go's ServerMetricsRecorder
// carries named metrics on the out-of-band stream as well (its
// CallMetricsRecorder's SetNamedMetric), so one recorder serves both paths;
// package loadreport sends every field above (under the same names: a
// test in client/strategy checks).

// RIFMetric is the ORCA named metric carrying a backend's requests in
// flight; LatencyMetric the one carrying its recent mean latency in
// milliseconds. Package loadreport sends both.
const (
	RIFMetric     = "rif"
	LatencyMetric = "latency_ms"
)
