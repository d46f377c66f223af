package loadreport

import (
	orcaservicegrpc "github.com/cncf/xds/go/xds/service/orca/v3"
	orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	"google.golang.org/grpc"
)

// Register registers r's out-of-band ORCA service (OpenRcaService) on s.
// Each StreamCoreMetrics stream gets a report at once and then one per the
// interval it asks for, or r's minimum interval if it asks for less
// (grpc-go's own orca.Register forbids less than 30 s; gRFC A58's clients
// ask for 10 s by default).
func Register(s grpc.ServiceRegistrar, r *Reporter) {
	orcaservicegrpc.RegisterOpenRcaServiceServer(s, &service{r: r})
}

type service struct {
	orcaservicegrpc.UnimplementedOpenRcaServiceServer
	r *Reporter
}

// StreamCoreMetrics sends r's report every interval until the client
// leaves; it returns the stream's error when a send fails.
func (s *service) StreamCoreMetrics(req *orcaservicepb.OrcaLoadReportRequest, stream orcaservicegrpc.OpenRcaService_StreamCoreMetricsServer) error {
	interval := s.r.minInterval
	if d := req.GetReportInterval(); d != nil && d.IsValid() {
		interval = max(d.AsDuration(), interval)
	}
	t := s.r.clk.NewTicker(interval)
	defer t.Stop()
	for {
		if err := stream.Send(s.r.report()); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-t.C():
		}
	}
}
