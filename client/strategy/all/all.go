// Package all registers every built-in strategy: import it for its side
// effect,
//
//	import _ "github.com/fairway-lb/fairway/client/strategy/all"
//
// and every strategy named in strategy.DefaultChain and the docs can be used
// in a chain.
package all

import (
	_ "github.com/fairway-lb/fairway/client/strategy/loadaware"    // registers load_aware
	_ "github.com/fairway-lb/fairway/client/strategy/outlier"      // registers outlier
	_ "github.com/fairway-lb/fairway/client/strategy/p2c"          // registers p2c
	_ "github.com/fairway-lb/fairway/client/strategy/roundrobin"   // registers round_robin
	_ "github.com/fairway-lb/fairway/client/strategy/shard"        // registers shard
	_ "github.com/fairway-lb/fairway/client/strategy/slowstart"    // registers slow_start
	_ "github.com/fairway-lb/fairway/client/strategy/weighted"     // registers weighted
	_ "github.com/fairway-lb/fairway/client/strategy/zoneaffinity" // registers zone_affinity
)
