package bench

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Strategy names, in the order a run compares them.
const (
	Connection       = "connection"
	RoundRobin       = "round_robin"
	GRPCLeastRequest = "grpc_least_request"
	FairwayP2C       = "fairway_p2c"
	Fairway          = "fairway"
	// GRPCWRR is grpc-go's weighted_round_robin (gRFC A58) on the pods'
	// ORCA reports, chosen by the control plane's policy.
	GRPCWRR = "grpc_wrr"
	// Oracle is one central join-shortest-queue dispatcher that knows every
	// pod's requests in flight at once: the limit no client-side policy can
	// beat. Simulation only.
	Oracle = "oracle"
)

// AllStrategies lists every strategy the harness compares.
var AllStrategies = []string{Connection, RoundRobin, GRPCLeastRequest, GRPCWRR, FairwayP2C, Fairway, LoadAware, Oracle}

// simOnly are the strategies that exist only in the simulation.
var simOnly = []string{Oracle}

// RealStrategies are the strategies a run on real servers can compare:
// AllStrategies without the simulation-only ones.
func RealStrategies() []string {
	return slices.DeleteFunc(slices.Clone(AllStrategies), func(s string) bool { return slices.Contains(simOnly, s) })
}

// DefaultStrategies are the strategies a run compares unless told:
// AllStrategies in the simulation, RealStrategies otherwise.
func DefaultStrategies(sim bool) []string {
	if sim {
		return slices.Clone(AllStrategies)
	}
	return RealStrategies()
}

// Pod describes one backend of a scenario. The time fields are fractions of
// one strategy's run (0.3 = 30% into it), so a scenario keeps its shape at
// any --duration.
type Pod struct {
	Zone       string
	Capacity   int     // requests served at once at full speed (>= 1)
	SlowFactor float64 // service-time multiplier; 0 or 1 = normal
	ErrorRate  float64 // fraction of requests failed at once with UNAVAILABLE
	ColdFactor float64 // service-time multiplier while cold; 0 or 1 = none
	ColdFor    float64 // length of the cold period after the pod starts (fraction)
	JoinAt     float64 // when the pod starts (fraction; 0 = from the beginning)
	CrashAt    float64 // when the pod is killed (fraction; 0 = never)
}

// Config is one benchmark run: a scenario and the strategies compared on it.
type Config struct {
	Scenario string
	// Duration is the whole run. Each strategy gets Duration/len(Strategies)
	// of traffic (set-up and tear-down come on top, about a second each).
	Duration   time.Duration
	Strategies []string

	Rate     float64       // target total requests per second (Poisson arrivals)
	Clients  int           // client channels
	Zones    []string      // client zones; ZoneWeights[i] of the channels are in Zones[i]
	ZoneW    []float64     // weights of Zones (nil = equal)
	Pods     []Pod         // the backends
	Median   time.Duration // median service time
	Sigma    float64       // log-normal shape of the service time
	Deadline time.Duration // per-request deadline

	Seed        uint64        // arrival schedule and channel zones/pinning
	MaxRequests int           // bound on requests per strategy (0 = 2,000,000)
	Bucket      time.Duration // width of the share-over-time buckets (0 = run/20)
	Progress    bool          // draw a progress bar on the output writer
	Sim         bool          // discrete-event simulation instead of real servers
	// Antagonist slows pods at random intervals (nil = never).
	Antagonist *Antagonist
	// FairwayChain replaces the `fairway` strategy's chain (JSON, as in
	// docs/design.md); "" is the client's default composition.
	FairwayChain string
}

// PhaseDuration is the traffic time each strategy gets.
func (c Config) PhaseDuration() time.Duration {
	if len(c.Strategies) == 0 {
		return c.Duration
	}
	return c.Duration / time.Duration(len(c.Strategies))
}

// Validate reports the first problem of c.
func (c Config) Validate() error {
	var errs []error
	if c.Duration <= 0 {
		errs = append(errs, errors.New("duration must be positive"))
	}
	if len(c.Strategies) == 0 {
		errs = append(errs, errors.New("no strategies"))
	}
	for _, s := range c.Strategies {
		if !slices.Contains(AllStrategies, s) {
			errs = append(errs, fmt.Errorf("unknown strategy %q (known: %s)", s, strings.Join(AllStrategies, ", ")))
		} else if !c.Sim && slices.Contains(simOnly, s) {
			errs = append(errs, fmt.Errorf("strategy %s runs only in the simulation (--sim): no real client knows every pod's queue at once", s))
		}
	}
	if c.Antagonist != nil {
		if err := c.Antagonist.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Rate <= 0 {
		errs = append(errs, errors.New("rate must be positive"))
	}
	if c.Clients < 1 {
		errs = append(errs, errors.New("clients must be >= 1"))
	}
	if len(c.Pods) == 0 {
		errs = append(errs, errors.New("no pods"))
	}
	if !c.Sim && len(c.Pods) > 2000 {
		errs = append(errs, fmt.Errorf("%d pods: real servers stop at 2000, use --sim", len(c.Pods)))
	}
	if len(c.Zones) == 0 {
		errs = append(errs, errors.New("no client zones"))
	}
	if c.ZoneW != nil && len(c.ZoneW) != len(c.Zones) {
		errs = append(errs, errors.New("zone weights and zones differ in length"))
	}
	if c.Median <= 0 || c.Deadline <= 0 {
		errs = append(errs, errors.New("median service time and deadline must be positive"))
	}
	var err error
	if len(errs) > 0 {
		err = fmt.Errorf("fairway/bench: %w", errors.Join(errs...))
	}
	if c.FairwayChain != "" {
		// The chain's error carries its package's prefix: context only.
		if _, chainErr := strategy.ParseChain(json.RawMessage(c.FairwayChain)); chainErr != nil {
			err = errors.Join(err, fmt.Errorf("fairway chain: %w", chainErr))
		}
	}
	return err
}

func (c Config) maxRequests() int {
	if c.MaxRequests <= 0 {
		return 2_000_000
	}
	return c.MaxRequests
}

func (c Config) bucket() time.Duration {
	if c.Bucket > 0 {
		return c.Bucket
	}
	return max(c.PhaseDuration()/20, time.Millisecond)
}

// podZones spreads n pods over zones in turn.
func podZones(n int, zones ...string) []Pod {
	pods := make([]Pod, n)
	for i := range pods {
		pods[i] = Pod{Zone: zones[i%len(zones)], Capacity: 2}
	}
	return pods
}

var threeZones = []string{"zone-a", "zone-b", "zone-c"}

// Defaults shared by every preset: a pod serves 2 requests at once with a
// 20 ms median service time (100 requests/s at full speed), load is about
// 65% of the pods' capacity, 50 client channels spread over three zones.
func base(name string) Config {
	return Config{
		Scenario:   name,
		Duration:   20 * time.Second,
		Strategies: RealStrategies(),
		Clients:    50,
		Zones:      slices.Clone(threeZones),
		Median:     20 * time.Millisecond,
		Sigma:      0.3,
		Deadline:   time.Second,
		Seed:       1,
		Progress:   true,
	}
}

var presets = map[string]func() Config{
	"homogeneous": func() Config {
		c := base("homogeneous")
		c.Pods = podZones(20, threeZones...)
		c.Rate = 1300
		return c
	},
	"one-slow-pod": func() Config {
		c := base("one-slow-pod")
		c.Pods = podZones(10, threeZones...)
		c.Pods[0].SlowFactor = 5
		c.Rate = 600
		return c
	},
	"heterogeneous-capacity": func() Config {
		c := base("heterogeneous-capacity")
		c.Pods = podZones(12, threeZones...)
		for i := range c.Pods {
			c.Pods[i].Capacity = []int{1, 2, 4}[i/4] // capacities 1, 2, 4 in every zone
		}
		c.Rate = 900
		return c
	},
	"cold-start": func() Config {
		c := base("cold-start")
		c.Pods = podZones(10, threeZones...)
		c.Pods[9].JoinAt = 0.3
		c.Pods[9].ColdFactor = 5
		c.Pods[9].ColdFor = 0.3
		c.Rate = 650
		return c
	},
	"error-pod": func() Config {
		c := base("error-pod")
		c.Pods = podZones(10, threeZones...)
		c.Pods[0].ErrorRate = 0.5
		c.Rate = 600
		return c
	},
	"zone-overload": func() Config {
		c := base("zone-overload")
		// 60% of the callers are in zone-a, which has 2 of the 10 pods.
		c.Pods = append(podZones(2, "zone-a"), podZones(8, "zone-b", "zone-c")...)
		c.ZoneW = []float64{0.6, 0.2, 0.2}
		c.Rate = 650
		return c
	},
	"scale-up": func() Config {
		c := base("scale-up")
		c.Pods = podZones(16, threeZones...)
		for i := 8; i < 16; i++ {
			c.Pods[i].JoinAt = 0.3
		}
		c.Rate = 650
		return c
	},
	// many-clients: the homogeneous pods called by 260 channels at 5
	// requests/s each, where a channel's own in-flight counts are nearly
	// always zero.
	"many-clients": func() Config {
		c := base("many-clients")
		c.Pods = podZones(20, threeZones...)
		c.Clients = 260
		c.Rate = 1300
		return c
	},
	// antagonist: 20 pods, each slowed 2-5× for random intervals (a second
	// on average, a fifth of the time), from 200 channels.
	"antagonist": func() Config {
		c := base("antagonist")
		c.Pods = podZones(20, threeZones...)
		c.Clients = 200
		c.Rate = 700
		c.Antagonist = &Antagonist{MinFactor: 2, MaxFactor: 5, Busy: 0.2, MeanSlow: 500 * time.Millisecond}
		return c
	},
	"pod-crash": func() Config {
		c := base("pod-crash")
		c.Pods = podZones(10, threeZones...)
		c.Pods[0].CrashAt = 0.4
		c.Rate = 600
		return c
	},
}

// Scenarios returns the names of the preset scenarios, sorted.
func Scenarios() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Preset returns the named scenario's configuration.
func Preset(name string) (Config, error) {
	p, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("fairway/bench: unknown scenario %q (known: %s)", name, strings.Join(Scenarios(), ", "))
	}
	return p(), nil
}

// Flags are the command-line settings of a run, as RegisterFlags binds them.
type Flags struct {
	Scenario   string
	Duration   time.Duration
	Strategies string
	Rate       float64
	Clients    int
	Pods       int
	Median     time.Duration
	Deadline   time.Duration
	Seed       uint64
	NoProgress bool
	Sim        bool
	Chain      string
	JSON       string // file for the JSON report ("" = none, "-" = the output)
	Plot       string // directory for PNG charts ("" = none)
}

// RegisterFlags defines the run's flags on fs and returns a function that,
// after fs.Parse, builds the Config: the preset named by --scenario with every
// flag the user set applied on top. The *Flags it returns also carries the
// output settings (--json, --plot).
func RegisterFlags(fs *flag.FlagSet) (*Flags, func() (Config, error)) {
	f := &Flags{}
	fs.StringVar(&f.Scenario, "scenario", "one-slow-pod", "scenario preset: "+strings.Join(Scenarios(), ", "))
	fs.DurationVar(&f.Duration, "duration", 20*time.Second, "traffic time of the whole run, shared equally by the strategies (set-up and drain add about 1-1.5 s per strategy)")
	fs.StringVar(&f.Strategies, "strategies", "", "comma-separated strategies to compare (default: "+strings.Join(RealStrategies(), ",")+"; with --sim also "+strings.Join(simOnly, ",")+")")
	fs.Float64Var(&f.Rate, "rate", 0, "target total requests per second (0 = the scenario's)")
	fs.IntVar(&f.Clients, "clients", 0, "client channels (0 = the scenario's)")
	fs.IntVar(&f.Pods, "pods", 0, "pods (0 = the scenario's; more repeats the scenario's last ordinary pod)")
	fs.DurationVar(&f.Median, "median", 0, "median service time (0 = the scenario's)")
	fs.DurationVar(&f.Deadline, "deadline", 0, "per-request deadline (0 = the scenario's)")
	fs.Uint64Var(&f.Seed, "seed", 1, "seed of the arrival schedule")
	fs.BoolVar(&f.NoProgress, "no-progress", false, "no progress bar (it is off anyway when the output is not a terminal)")
	fs.StringVar(&f.Chain, "fairway-chain", "", "strategy chain JSON for the fairway strategy (default: the client's default composition)")
	fs.BoolVar(&f.Sim, "sim", false, "discrete-event simulation instead of real gRPC servers (for hundreds of pods)")
	fs.StringVar(&f.JSON, "json", "", "write the JSON report to this file")
	fs.StringVar(&f.Plot, "plot", "", "write PNG charts to this directory")
	return f, func() (Config, error) {
		c, err := Preset(f.Scenario)
		if err != nil {
			return Config{}, err
		}
		c.Duration = f.Duration
		c.Strategies = splitList(f.Strategies)
		if len(c.Strategies) == 0 {
			c.Strategies = DefaultStrategies(f.Sim)
		}
		if f.Rate > 0 {
			c.Rate = f.Rate
		}
		if f.Clients > 0 {
			c.Clients = f.Clients
		}
		if f.Pods > 0 {
			c.Pods = resizePods(c.Pods, f.Pods)
		}
		if f.Median > 0 {
			c.Median = f.Median
		}
		if f.Deadline > 0 {
			c.Deadline = f.Deadline
		}
		c.Seed = f.Seed
		c.Sim = f.Sim
		c.FairwayChain = f.Chain
		c.Progress = !f.NoProgress && isTerminal(os.Stderr)
		return c, c.Validate()
	}
}

// resizePods keeps the first n pods, or adds copies of the last ordinary pod
// (no fault) with zones in turn.
func resizePods(pods []Pod, n int) []Pod {
	if n <= len(pods) {
		return slices.Clone(pods[:n])
	}
	out := slices.Clone(pods)
	tmpl := Pod{Capacity: 2}
	var zones []string
	for _, p := range pods {
		if !slices.Contains(zones, p.Zone) {
			zones = append(zones, p.Zone)
		}
		if p == (Pod{Zone: p.Zone, Capacity: p.Capacity}) {
			tmpl = p
		}
	}
	for i := len(out); i < n; i++ {
		p := tmpl
		p.Zone = zones[i%len(zones)]
		out = append(out, p)
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
