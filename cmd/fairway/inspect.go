package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	statuspb "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/fairway-lb/fairway/client"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/cliflag"
	"github.com/fairway-lb/fairway/wire"
)

// inspectFlags are the flags of `fairway inspect`.
type inspectFlags struct {
	controlPlane string // admin address of a control plane
	client       string // gRPC address of a client serving CSDS
	clientDebug  string // URL of a client's client.DebugHandler
	name         string
	namespace    string // only what a client of this namespace sees, and its streams
	asJSON       bool
	timeout      time.Duration
}

func parseInspectFlags(args []string, stdout, stderr io.Writer) (inspectFlags, error) {
	var f inspectFlags
	fs := flag.NewFlagSet("fairway inspect", flag.ContinueOnError)
	fs.StringVar(&f.controlPlane, "control-plane", "", "admin address (host:port or URL) of a control plane: show its resources (/debug/config_dump) and clients (/debug/clients)")
	fs.StringVar(&f.client, "client", "", "gRPC address of a Fairway client serving CSDS (client.RegisterCSDS): show what it holds")
	fs.StringVar(&f.clientDebug, "client-debug", "", "URL of the client's endpoint debug handler (client.DebugHandler): show its endpoints too")
	fs.StringVar(&f.name, "name", "", "only this resource (service) name, e.g. echo.default:8080")
	fs.StringVar(&f.namespace, "namespace", "", "with --control-plane: only what clients authenticated in this namespace see, and their streams")
	fs.BoolVar(&f.asJSON, "json", false, "print the raw JSON instead of tables")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up on a query after this long")
	if err := cliflag.Parse(fs, args, stdout, stderr); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if f.controlPlane == "" && f.client == "" && f.clientDebug == "" {
		return f, errors.New("give --control-plane ADMIN_ADDR, --client ADDR or --client-debug URL (or several)")
	}
	return f, nil
}

// runInspect is `fairway inspect`: what a control plane serves and to whom,
// and what a client holds, for one service or all.
func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseInspectFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.controlPlane != "" {
		if err := inspectControlPlane(ctx, f, stdout); err != nil {
			return err
		}
	}
	if f.client != "" {
		if err := inspectClient(ctx, f, stdout); err != nil {
			return err
		}
	}
	if f.clientDebug != "" {
		return inspectEndpoints(ctx, f, stdout)
	}
	return nil
}

// getJSON GETs url and decodes its JSON body into v; raw is the body.
func getJSON(ctx context.Context, u string, v any) (raw json.RawMessage, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	return body, nil
}

// adminURL is the URL of path on a control plane's admin server addr
// (host:port or a URL).
func adminURL(addr, path string, query url.Values) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u := strings.TrimSuffix(addr, "/") + path
	if q := query.Encode(); q != "" {
		u += "?" + q
	}
	return u
}

func inspectControlPlane(ctx context.Context, f inspectFlags, w io.Writer) error {
	q := url.Values{}
	if f.name != "" {
		q.Set("name", f.name)
	}
	if f.namespace != "" {
		q.Set("namespace", f.namespace)
	}
	var dump xdsserver.ConfigDump
	rawDump, err := getJSON(ctx, adminURL(f.controlPlane, "/debug/config_dump", q), &dump)
	if err != nil {
		return err
	}
	var clients xdsserver.ClientsDump
	rawClients, err := getJSON(ctx, adminURL(f.controlPlane, "/debug/clients", nil), &clients)
	if err != nil {
		return err
	}
	if f.asJSON {
		return writeIndented(w, map[string]json.RawMessage{"config_dump": rawDump, "clients": rawClients})
	}
	fmt.Fprintf(w, "Control plane %s: resources served\n", f.controlPlane)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tNAME\tSUMMARY")
	for _, td := range dump.Types {
		for _, r := range td.Resources {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", td.Type, r.Name, summarize(td.Type, r.Resource))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nControl plane %s: clients\n", f.controlPlane)
	defer fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAMESPACE\tZONE\tPROTOCOL\tTYPE\tNAMES\tSENT\tACKED\tNACKED\tERROR")
	for _, st := range clients.Streams {
		if f.namespace != "" && st.Namespace != f.namespace {
			continue
		}
		for _, sub := range st.Subscriptions {
			if f.name != "" && !subscribed(sub, f.name) {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", st.NodeID, dash(st.Namespace), dash(st.Zone), st.Protocol, sub.Type,
				names(sub), dash(sub.SentVersion), dash(sub.AckedVersion), dash(sub.NackedVersion), dash(sub.NackError))
		}
	}
	return tw.Flush()
}

// summarize is a few words on a resource of a config dump: a Cluster's
// load-balancing policy and Fairway strategy, an assignment's endpoints.
func summarize(typ string, raw json.RawMessage) string {
	var r struct {
		Policy struct {
			Policies []struct {
				Config struct{ Name string } `json:"typed_extension_config"`
			}
		} `json:"load_balancing_policy"`
		Metadata struct {
			Filter map[string]map[string]any `json:"filter_metadata"`
		}
		Endpoints []struct {
			LBEndpoints []json.RawMessage `json:"lb_endpoints"`
		}
	}
	if json.Unmarshal(raw, &r) != nil {
		return ""
	}
	switch typ {
	case "cluster":
		var words []string
		if p := r.Policy.Policies; len(p) > 0 {
			words = append(words, "policy "+strings.TrimPrefix(p[0].Config.Name, "envoy.load_balancing_policies."))
		}
		if chain, ok := r.Metadata.Filter[wire.MetadataNamespace][wire.MetadataStrategy]; ok {
			b, _ := json.Marshal(chain)
			words = append(words, "strategy "+string(b))
		}
		return strings.Join(words, ", ")
	case "endpoint":
		n := 0
		for _, l := range r.Endpoints {
			n += len(l.LBEndpoints)
		}
		return fmt.Sprintf("%d endpoints in %d localities", n, len(r.Endpoints))
	}
	return ""
}

// subscribed reports whether sub names the resource name (or another name
// of its service).
func subscribed(sub xdsserver.SubscriptionDump, name string) bool {
	want, err := wire.ParseResourceName(name)
	for _, n := range sub.Names {
		if n == name || n == "*" {
			return true
		}
		if k, kerr := wire.ParseResourceName(n); err == nil && kerr == nil && k == want {
			return true
		}
	}
	return false
}

func names(sub xdsserver.SubscriptionDump) string {
	s := strings.Join(sub.Names, ",")
	if more := sub.NameCount - len(sub.Names); more > 0 {
		s += fmt.Sprintf(",… (%d more)", more)
	}
	return dash(s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// inspectClient queries a client's CSDS.
func inspectClient(ctx context.Context, f inspectFlags, w io.Writer) error {
	cc, err := grpc.NewClient(f.client, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	resp, err := statuspb.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(ctx, &statuspb.ClientStatusRequest{})
	if err != nil {
		return fmt.Errorf("CSDS query to %s: %w", f.client, err)
	}
	if f.asJSON {
		b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	for _, cfg := range resp.GetConfig() {
		fmt.Fprintf(w, "Client %s: node %s, zone %s\n", f.client, cfg.GetNode().GetId(), dash(cfg.GetNode().GetLocality().GetZone()))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TYPE\tNAME\tSTATUS\tVERSION\tUPDATED\tREJECTED\tERROR")
		for _, x := range cfg.GetGenericXdsConfigs() {
			if f.name != "" && !nameMatches(x.GetName(), f.name) {
				continue
			}
			updated := "-"
			if x.GetLastUpdated() != nil {
				updated = x.GetLastUpdated().AsTime().Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortType(x.GetTypeUrl()), x.GetName(), x.GetClientStatus(),
				dash(x.GetVersionInfo()), updated, dash(x.GetErrorState().GetVersionInfo()), dash(x.GetErrorState().GetDetails()))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	return nil
}

func nameMatches(n, name string) bool {
	return subscribed(xdsserver.SubscriptionDump{Names: []string{n}}, name) && n != "*"
}

func shortType(typeURL string) string {
	switch typeURL {
	case wire.ClusterType:
		return "cluster"
	case wire.EndpointType:
		return "endpoint"
	}
	return typeURL
}

// inspectEndpoints reads a client's endpoint debug handler.
func inspectEndpoints(ctx context.Context, f inspectFlags, w io.Writer) error {
	u := f.clientDebug
	if f.name != "" {
		u = adminURL(u, "", url.Values{"target": {f.name}})
	}
	var eps []client.EndpointJSON
	raw, err := getJSON(ctx, u, &eps)
	if err != nil {
		return err
	}
	if f.asJSON {
		_, err := w.Write(raw)
		return err
	}
	fmt.Fprintf(w, "Client %s: endpoints\n", f.clientDebug)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tADDRESS\tZONE\tHEALTH\tCONNECTIVITY\tREADY\tWEIGHT\tIN_FLIGHT\tPICKS\tFAILURES")
	for _, e := range eps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%.3g\t%d\t%d\t%d\n", e.Target, e.Address, dash(e.Zone), e.Health, e.Connectivity,
			e.Ready, e.EffectiveWeight, e.InFlight, e.Picks, e.Failures)
	}
	return tw.Flush()
}
