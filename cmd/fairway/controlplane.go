package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/fairway-lb/fairway/controlplane/convert"
	"github.com/fairway-lb/fairway/controlplane/file"
	"github.com/fairway-lb/fairway/controlplane/kube"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/cliflag"
)

// controlPlaneFlags are the flags of `fairway controlplane`.
type controlPlaneFlags struct {
	file       string
	kubeconfig string
	namespaces stringList
	selector   string
	watchPods  bool
	xdsAddr    string
	adminAddr  string
	debounce   time.Duration
	warmup     time.Duration
	logLevel   string
	pprof      bool
	logFormat  string

	// Server limits (xdsserver.WithMaxStreamsPerConnection, …); 0: none.
	maxStreamsPerConn int
	maxStreamsPerNode int
	maxNamesPerStream int
	callerZonesEvery  time.Duration

	maxConnAge       time.Duration
	maxConnAgeGrace  time.Duration
	keepaliveTime    time.Duration
	keepaliveTimeout time.Duration
	pushTimeout      time.Duration
	maxSendMsgSize   int
	sizeWarning      int

	security securityFlags // security.go

	// defaultExportTo is --default-export-to, parsed.
	defaultExportTo topology.Export
}

// defaultCallerZonesWarmup is --caller-zones-warmup's default: about the
// time clients take to find a restarted control plane (the Fairway client's
// reconnect backoff stays under a few seconds at first).
const defaultCallerZonesWarmup = 5 * time.Second

func runControlPlane(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseControlPlaneFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	src, err := newSource(f, log, reg)
	if err != nil {
		return err
	}

	secure, stopTLS, err := xdsSecurity(f, log, reg)
	if err != nil {
		return err
	}
	defer stopTLS()
	xds := xdsserver.New(xdsserver.WithGRPCServerOptions(secure...), xdsserver.WithRequireIdentity(!f.security.mode.None()),
		xdsserver.WithDebounce(f.debounce), xdsserver.WithLogger(log), xdsserver.WithRegisterer(reg),
		xdsserver.WithCallerZonesWarmup(f.warmup), xdsserver.WithCallerZonesInterval(f.callerZonesEvery),
		xdsserver.WithMaxStreamsPerConnection(f.maxStreamsPerConn), xdsserver.WithMaxStreamsPerNode(f.maxStreamsPerNode),
		xdsserver.WithMaxNamesPerStream(f.maxNamesPerStream),
		xdsserver.WithMaxConnectionAge(f.maxConnAge, f.maxConnAgeGrace),
		xdsserver.WithKeepalive(f.keepaliveTime, f.keepaliveTimeout),
		xdsserver.WithPushTimeout(f.pushTimeout),
		xdsserver.WithMaxSendMsgSize(f.maxSendMsgSize),
		xdsserver.WithResponseSizeWarning(f.sizeWarning))
	defer xds.Close()
	return serveControlPlane(ctx, log, src, xds, f.xdsAddr, f.adminAddr, adminHandler(xds, src, f.pprof))
}

// parseControlPlaneFlags parses and checks the flags of `fairway controlplane`.
func parseControlPlaneFlags(args []string, stdout, stderr io.Writer) (f controlPlaneFlags, err error) {
	fs := flag.NewFlagSet("fairway controlplane", flag.ContinueOnError)
	fs.StringVar(&f.file, "file", "", "serve the Services and EndpointSlices of this YAML file (watched) instead of a cluster")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to watch (default: $KUBECONFIG, then in-cluster config)")
	fs.Var(&f.namespaces, "namespace", "namespace to watch (repeatable or comma-separated; default: all)")
	fs.StringVar(&f.selector, "selector", "", "label selector on Services (default: every Service)")
	fs.BoolVar(&f.watchPods, "watch-pods", false, "also watch Pods, for pod labels (e.g. shard) and the fairway.io/weight pod annotation")
	fs.StringVar(&f.xdsAddr, "xds-addr", "127.0.0.1:18000", "address of the xDS (ADS) gRPC server")
	fs.StringVar(&f.adminAddr, "admin-addr", "127.0.0.1:9090", "address of the admin HTTP server (/healthz, /readyz, /metrics, /debug/config_dump, /debug/clients); empty disables it")
	fs.BoolVar(&f.pprof, "enable-pprof", false, "also serve Go's profiles on the admin server under /debug/pprof/")
	fs.DurationVar(&f.debounce, "debounce", xdsserver.DefaultDebounce, "coalesce changes within this window before pushing")
	fs.DurationVar(&f.warmup, "caller-zones-warmup", defaultCallerZonesWarmup, "publish the callers' zones only this long after start, once restarted clients have reconnected")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.IntVar(&f.maxStreamsPerConn, "max-streams-per-connection", xdsserver.DefaultMaxStreamsPerConnection, "streams open at once on one client connection (HTTP/2 MAX_CONCURRENT_STREAMS); 0: no limit")
	fs.IntVar(&f.maxStreamsPerNode, "max-streams-per-node", xdsserver.DefaultMaxStreamsPerNode, "streams open at once with one xDS node id; more are refused with RESOURCE_EXHAUSTED; 0: no limit")
	fs.IntVar(&f.maxNamesPerStream, "max-names-per-stream", xdsserver.DefaultMaxNamesPerStream, "resource names one stream may subscribe to, over all types; more end it with RESOURCE_EXHAUSTED; 0: no limit")
	fs.DurationVar(&f.callerZonesEvery, "caller-zones-interval", xdsserver.DefaultCallerZonesInterval, "shortest time between two updates of a Cluster for a change of its callers' zones alone")
	fs.DurationVar(&f.maxConnAge, "max-connection-age", xdsserver.DefaultMaxConnectionAge, "ask clients to reconnect after this long (±10%), so they spread over the replicas again after a rollout; 0: never")
	fs.DurationVar(&f.maxConnAgeGrace, "max-connection-age-grace", xdsserver.DefaultMaxConnectionAgeGrace, "then close the connection after this long")
	fs.DurationVar(&f.keepaliveTime, "keepalive-time", xdsserver.DefaultKeepaliveTime, "ping a client connection silent for this long")
	fs.DurationVar(&f.keepaliveTimeout, "keepalive-timeout", xdsserver.DefaultKeepaliveTimeout, "close it when the ping is not answered within this long")
	fs.DurationVar(&f.pushTimeout, "push-timeout", xdsserver.DefaultPushTimeout, "/healthz fails when a push has run, or been due, for longer; 0: never")
	fs.IntVar(&f.maxSendMsgSize, "max-send-msg-size", xdsserver.DefaultMaxSendMsgSize, "largest xDS response sent, in bytes (clients must accept as much)")
	fs.IntVar(&f.sizeWarning, "response-size-warning", xdsserver.DefaultResponseSizeWarning, "warn (log and fairway_xds_large_responses_total) about responses of this many bytes or more; 0: never")
	f.security.register(fs)
	exportTo := fs.String("default-export-to", "*", `who sees a Service without a fairway.io/export-to annotation: "*" every namespace, "." its own namespace only`)
	if err := cliflag.Parse(fs, args, stdout, stderr); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := f.security.check(f.file != "", f.kubeconfig); err != nil {
		return f, err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"debounce", f.debounce}, {"caller-zones-warmup", f.warmup}, {"caller-zones-interval", f.callerZonesEvery},
		{"max-connection-age", f.maxConnAge},
		{"max-connection-age-grace", f.maxConnAgeGrace}, {"keepalive-time", f.keepaliveTime},
		{"keepalive-timeout", f.keepaliveTimeout}, {"push-timeout", f.pushTimeout}} {
		if d.v < 0 {
			return f, fmt.Errorf("--%s must not be negative, got %v", d.name, d.v)
		}
	}
	for _, l := range []struct {
		name string
		n    int
	}{{"max-streams-per-connection", f.maxStreamsPerConn}, {"max-streams-per-node", f.maxStreamsPerNode},
		{"max-names-per-stream", f.maxNamesPerStream}} {
		if l.n < 0 {
			return f, fmt.Errorf("--%s must not be negative, got %d", l.name, l.n)
		}
	}
	if f.maxSendMsgSize <= 0 {
		return f, fmt.Errorf("--max-send-msg-size must be positive, got %d", f.maxSendMsgSize)
	}
	if f.defaultExportTo, err = convert.ParseDefaultExportTo(*exportTo); err != nil {
		return f, fmt.Errorf("--default-export-to: want \"*\" or \".\", got %q", *exportTo)
	}
	return f, nil
}

// newSource builds the file source when --file is given, else the Kubernetes
// source.
func newSource(f controlPlaneFlags, log *slog.Logger, reg prometheus.Registerer) (topology.Source, error) {
	if f.file != "" {
		// --kubeconfig is for the TokenReview API alone then.
		if (f.kubeconfig != "" && !f.security.mode.Token) || len(f.namespaces) > 0 || f.selector != "" || f.watchPods {
			return nil, errors.New("--file cannot be combined with --kubeconfig (except for --auth token), --namespace, --selector or --watch-pods")
		}
		return file.New(f.file, file.WithLogger(log), file.WithRegisterer(reg), file.WithDefaultExport(f.defaultExportTo)), nil
	}
	kubeconfig := f.kubeconfig
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	cfg, err := kube.RESTConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("no cluster to watch (give --file PATH to serve a YAML file instead): %w", err)
	}
	// client-go logs through klog: route it to our logger (its V(n) lines
	// at slog level -n, so V(4) and below show with --log-level debug).
	klog.SetSlogLogger(log.With("component", "client-go"))
	opts := []kube.Option{kube.WithLogger(log), kube.WithRegisterer(reg), kube.WithPods(f.watchPods), kube.WithDefaultExport(f.defaultExportTo)}
	if len(f.namespaces) > 0 {
		opts = append(opts, kube.WithNamespaces(f.namespaces...))
	}
	if f.selector != "" {
		sel, err := kube.ParseSelector(f.selector)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kube.WithSelector(sel))
	}
	return kube.NewForConfig(cfg, opts...)
}

// serveControlPlane runs the source, the xDS server and the admin server
// until ctx is done or one of them fails, then stops all three. Its own log
// lines carry component=fairway/controlplane (the source's and the xDS
// server's carry theirs).
func serveControlPlane(ctx context.Context, log *slog.Logger, src topology.Source, xds *xdsserver.Server, xdsAddr, adminAddr string, adminH http.Handler) error {
	log = log.With("component", "fairway/controlplane")
	lis, err := net.Listen("tcp", xdsAddr)
	if err != nil {
		return fmt.Errorf("xds listener: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- xds.Serve(lis) }()
	log.Info("serving xDS", "addr", lis.Addr().String())

	var admin *http.Server
	if adminAddr != "" {
		alis, err := net.Listen("tcp", adminAddr)
		if err != nil {
			xds.Close()
			<-errc
			return fmt.Errorf("admin listener: %w", err)
		}
		admin = &http.Server{Handler: adminH, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := admin.Serve(alis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin server: %w", err)
			}
		}()
		log.Info("serving admin", "addr", alis.Addr().String())
	}
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(ctx, xds) }()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-srcDone:
		srcDone <- err
		if err != nil && ctx.Err() == nil {
			runErr = fmt.Errorf("source: %w", err)
		}
	case err := <-errc:
		runErr = err
	}
	cancel()
	if err := <-srcDone; err != nil && runErr == nil && !errors.Is(err, context.Canceled) {
		runErr = fmt.Errorf("source: %w", err)
	}
	if admin != nil {
		shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
		_ = admin.Shutdown(shutdownCtx)
		done()
	}
	xds.Close()
	return runErr
}

// adminHandler is the admin server's handler: xds.AdminHandler, with a
// /readyz whose 503 body also names the source's last error (a Kubernetes
// API it cannot reach) and, with pprofOn, /debug/pprof.
func adminHandler(xds *xdsserver.Server, src topology.Source, pprofOn bool) http.Handler {
	h := xds.AdminHandler()
	le, hasErr := src.(interface{ LastError() error })
	if !hasErr && !pprofOn {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	if hasErr {
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
			if err := le.LastError(); err != nil && !xds.Ready() {
				http.Error(w, "no snapshot pushed yet; last source error: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
