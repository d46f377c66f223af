package client_test

import (
	"log"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fairway-lb/fairway/client"
)

// The one-line adoption: import the package (here it is imported for
// WithFairway too; `import _ "github.com/fairway-lb/fairway/client"` is
// enough) and dial a fairway:/// target. The control plane comes from
// FAIRWAY_XDS_ADDR and the caller's zone from FAIRWAY_ZONE or the
// downward-API labels file.
func Example() {
	conn, err := grpc.NewClient("fairway:///echo.default:8080",
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	// Use conn as any *grpc.ClientConn: every RPC picks a pod.
}

// The same without globals: everything comes from options, with the strategy
// chain overridden locally.
func ExampleWithFairway() {
	conn, err := grpc.NewClient("fairway:///echo.default.svc.cluster.local:8080",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		client.WithFairway(
			client.WithXDSServers("fairway-xds.fairway-system:18000"),
			client.WithZone("eu-west-1a"),
			client.WithStrategy(`[{"zone_affinity":{"spill_margin":0.2}},{"p2c":{}}]`),
		))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
}
