package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fairway-lb/fairway/wire"
)

// subscriptionTypes is the order in which subscriptions are sent on a new stream.
var subscriptionTypes = []string{wire.ClusterType, wire.EndpointType}

// run owns the ADS stream: it opens one at a time, rotating through the
// servers, and waits with backoff between failures. It returns when ctx is done.
func (c *Client) run(ctx context.Context) {
	retries := 0
	failed := 0 // attempts failed in a row
	for idx := 0; ; idx = (idx + 1) % len(c.servers) {
		// Open no stream while nothing is watched.
		if !c.waitForSubscriptions(ctx) {
			return
		}
		addr := c.servers[idx]
		c.log.Debug("opening ADS stream", "server", addr)
		worked, err := c.runStream(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		reason := streamErrorReason(err)
		c.m.streamErrors.WithLabelValues(reason).Inc()
		// A response over the receive limit comes again on the next
		// stream: back off as after a stream that never worked.
		if worked && !tooLarge(err) {
			retries, failed = 0, 0
		}
		failed++
		// Watchers hear of it when a working stream breaks or when every
		// address has failed in a row, not while failover may still succeed.
		allFailed := failed >= len(c.servers)
		c.setDisconnected(fmt.Errorf("%s: %w", addr, err), worked || allFailed)
		d := c.opts.backoff(retries)
		retries++
		c.logStreamError(addr, err, reason, allFailed, d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// waitForSubscriptions blocks until some name is watched; false when ctx is done.
func (c *Client) waitForSubscriptions(ctx context.Context) bool {
	for {
		c.mu.Lock()
		n := len(c.resources[wire.ClusterType]) + len(c.resources[wire.EndpointType])
		c.mu.Unlock()
		if n > 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-c.subCh:
		}
	}
}

// streamState is what one stream remembers per type; used only by the stream
// goroutine.
type streamState struct {
	stream   grpc.BidiStreamingClient[discoverypb.DiscoveryRequest, discoverypb.DiscoveryResponse]
	sentNode bool
	sent     map[string][]string // names last requested; nil before the first request
	version  map[string]string   // last accepted version
	nonce    map[string]string   // last response nonce
}

// runStream runs one ADS stream until it fails or ctx is done. worked reports
// whether the server answered at least once.
func (c *Client) runStream(ctx context.Context, addr string) (worked bool, err error) {
	cc, err := grpc.NewClient(addr, c.opts.dialOpts...)
	if err != nil {
		return false, err
	}
	defer cc.Close()
	sctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(nil); wg.Wait() }()
	// The watchdog gives the stream up when its first response does not
	// come in time (WithResponseTimeout); err is then its cause.
	watchdog := c.startWatchdog(cancel)
	defer watchdog.Stop()
	defer func() {
		// Unless the first response won the race with the watchdog.
		if cause := context.Cause(sctx); !worked && errors.Is(cause, errNoResponse) {
			err = cause
		}
	}()

	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(sctx)
	if err != nil {
		return false, err
	}
	st := &streamState{stream: stream, sent: map[string][]string{}, version: map[string]string{}, nonce: map[string]string{}}

	rcv := startReceiver(sctx, stream, &wg)
	if err := c.sendSubscriptions(st); err != nil {
		return false, rcv.sendError(ctx, err)
	}
	for {
		select {
		case <-ctx.Done():
			return worked, ctx.Err()
		case err := <-rcv.errs:
			return worked, err
		case <-c.subCh:
			if err := c.sendSubscriptions(st); err != nil {
				return worked, rcv.sendError(ctx, err)
			}
		case resp := <-rcv.resps:
			if !worked {
				worked = true
				watchdog.Stop()
				c.setConnected()
			}
			if err := c.handleResponse(st, resp); err != nil {
				return worked, rcv.sendError(ctx, err)
			}
		}
	}
}

// receiver is a stream's receiving goroutine: it hands over each response
// on resps, and the error that ends the stream on errs.
type receiver struct {
	resps chan *discoverypb.DiscoveryResponse
	errs  chan error // buffered(1): written once
}

// startReceiver receives from stream until it fails or ctx is done; wg
// tracks the goroutine.
func startReceiver(ctx context.Context, stream grpc.BidiStreamingClient[discoverypb.DiscoveryRequest, discoverypb.DiscoveryResponse], wg *sync.WaitGroup) receiver {
	r := receiver{resps: make(chan *discoverypb.DiscoveryResponse), errs: make(chan error, 1)}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			if err != nil {
				r.errs <- err
				return
			}
			select {
			case r.resps <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	return r
}

// sendError is the error that ends a stream whose Send failed with err.
// Send fails with io.EOF once the stream has ended, whatever ended it (a
// response over the receive limit, the server going away): the reason is
// the error Recv returns, which comes after any response still buffered.
func (r receiver) sendError(ctx context.Context, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		select {
		case err := <-r.errs:
			return err
		case <-r.resps: // the stream is over: nothing to apply
		case <-ctx.Done():
			return err
		}
	}
}

// send sends one request, with the node on the first request of the stream.
func (c *Client) send(st *streamState, typeURL string, names []string, version string, detail *statuspb.Status) error {
	req := &discoverypb.DiscoveryRequest{
		TypeUrl:       typeURL,
		ResourceNames: names,
		VersionInfo:   version,
		ResponseNonce: st.nonce[typeURL],
		ErrorDetail:   detail,
	}
	if !st.sentNode {
		req.Node = c.node
		st.sentNode = true
	}
	if names == nil {
		req.ResourceNames = []string{}
	}
	st.sent[typeURL] = names
	return st.stream.Send(req)
}

// sendSubscriptions sends a request for every type whose subscribed names
// changed since the last request of this stream. A type never requested on
// this stream is requested only once it has names (an empty first request
// would mean wildcard); afterwards an empty list unsubscribes from all.
func (c *Client) sendSubscriptions(st *streamState) error {
	for _, t := range subscriptionTypes {
		c.mu.Lock()
		names := c.namesLocked(t)
		c.mu.Unlock()
		prev, requested := st.sent[t]
		if slices.Equal(names, prev) && (requested || len(names) == 0) {
			continue
		}
		if !requested && len(names) == 0 {
			continue
		}
		c.log.Debug("ADS request", "type", t, "names", names)
		if err := c.send(st, t, names, st.version[t], nil); err != nil {
			return err
		}
	}
	return nil
}

// handleResponse applies a response's valid resources, tells the watchers,
// and ACKs or NACKs it.
func (c *Client) handleResponse(st *streamState, resp *discoverypb.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	st.nonce[t] = resp.GetNonce()
	var problems []string
	valid := map[string]decoded{}
	invalid := map[string]error{}
	for _, a := range resp.GetResources() {
		d := c.decode(t, resp.GetVersionInfo(), a)
		switch {
		case d.err != nil:
			problems = append(problems, d.err.Error())
			if d.name != "" {
				invalid[d.name] = d.err
			}
		default:
			valid[d.name] = d
		}
	}
	updates := 0
	now := time.Now()
	c.mu.Lock()
	for name, d := range valid {
		rs := c.resources[t][name]
		if rs == nil {
			continue // not (or no longer) subscribed
		}
		rs.version, rs.updated, rs.rejected = resp.GetVersionInfo(), now, nil
		if rs.raw != nil && proto.Equal(rs.raw, d.raw) {
			continue
		}
		rs.raw, rs.value = d.raw, d.value
		updates++
		for w := range rs.watchers {
			v := d.value
			c.cb.schedule(w, func() { w.update(v) })
		}
	}
	for name, err := range invalid {
		rs := c.resources[t][name]
		if rs == nil {
			continue
		}
		rs.rejected = &rejection{version: resp.GetVersionInfo(), err: err.Error(), at: now}
		err := fmt.Errorf("%w: %w", ErrInvalidResource, err)
		for w := range rs.watchers {
			c.cb.schedule(w, func() { w.onErr(err) })
		}
	}
	// A Cluster response is the whole state: a subscribed Cluster it lacks has
	// been removed. (ClusterLoadAssignment responses carry only changes.)
	if t == wire.ClusterType && len(problems) == 0 {
		c.removeClustersLocked(valid)
	}
	names := c.namesLocked(t)
	c.mu.Unlock()

	if updates > 0 {
		c.m.updates.WithLabelValues(typeLabel(t)).Add(float64(updates))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		detail := &statuspb.Status{
			Code:    int32(codes.InvalidArgument),
			Message: "fairway/xdsclient: rejected version " + resp.GetVersionInfo() + ": " + strings.Join(problems, "; "),
		}
		c.m.nacks.WithLabelValues(typeLabel(t)).Inc()
		c.log.Warn("NACK", "type", t, "version", resp.GetVersionInfo(), "error", detail.Message)
		return c.send(st, t, names, st.version[t], detail)
	}
	st.version[t] = resp.GetVersionInfo()
	c.m.lastUpdate.SetToCurrentTime()
	c.log.Debug("ACK", "type", t, "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()), "updates", updates)
	return c.send(st, t, names, st.version[t], nil)
}

// removeClustersLocked forgets the subscribed Clusters that a valid
// Cluster response (the whole state) lacks, and tells their watchers.
// c.mu is held.
func (c *Client) removeClustersLocked(valid map[string]decoded) {
	for name, rs := range c.resources[wire.ClusterType] {
		if _, ok := valid[name]; ok || rs.raw == nil {
			continue
		}
		rs.raw, rs.value, rs.version = nil, nil, ""
		err := fmt.Errorf("%w: Cluster %q", ErrResourceRemoved, name)
		for w := range rs.watchers {
			c.cb.schedule(w, func() { w.onErr(err) })
		}
	}
}

// errNoResponse is the cause of a stream given up by its watchdog.
var errNoResponse = errors.New("fairway/xdsclient: no response from the control plane")

// watchdog is a stream's timer for its first response; its zero value
// (no timeout) does nothing.
type watchdog struct{ t *time.Timer }

// Stop stops the watchdog; it may be called more than once.
func (w watchdog) Stop() {
	if w.t != nil {
		w.t.Stop()
	}
}

// startWatchdog cancels a stream with errNoResponse when it has had no
// response within the response timeout. Stopped at the first response.
func (c *Client) startWatchdog(cancel context.CancelCauseFunc) watchdog {
	d := c.opts.responseTimeout
	if d <= 0 {
		return watchdog{}
	}
	return watchdog{time.AfterFunc(d, func() { cancel(fmt.Errorf("%w within %v", errNoResponse, d)) })}
}

// tooLarge reports whether err is gRPC's refusal of a message over a size
// limit (RESOURCE_EXHAUSTED "... larger than max (N vs. LIMIT)"), not another
// RESOURCE_EXHAUSTED (a server's stream or name limit).
func tooLarge(err error) bool {
	return status.Code(err) == codes.ResourceExhausted && messageSizes.MatchString(err.Error())
}

// refused reports whether err is a refusal that retrying the same way will
// not mend.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented:
		return true
	}
	return false
}

// Reasons of fairway_client_xds_stream_errors_total besides gRPC codes
// (snake_case: resource_exhausted for a response over the receive limit or
// a server limit, unavailable, ...).
const (
	reasonNoResponse = "no_response"
	reasonEOF        = "eof"
)

// streamErrorReason is the reason label of a stream's error: the gRPC
// status code in snake_case, reasonNoResponse or reasonEOF.
func streamErrorReason(err error) string {
	switch {
	case errors.Is(err, errNoResponse):
		return reasonNoResponse
	case errors.Is(err, io.EOF):
		return reasonEOF
	}
	return snakeCase(status.Code(err).String())
}

// snakeCase turns a gRPC code name ("ResourceExhausted") into
// "resource_exhausted".
func snakeCase(s string) string {
	var b strings.Builder
	for i, r := range s {
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// messageSizes reads the sizes out of gRPC's "larger than max (SIZE vs.
// LIMIT)" errors.
var messageSizes = regexp.MustCompile(`larger than max \((\d+) vs\. (\d+)\)`)

// logStreamError logs why a stream ended: a response too large at error
// level (every resource of the stream stays stale until it is fixed); a
// silent replica, a refusal no retry can mend (credentials, permissions, a
// server without ADS) and any failure once every address has failed in a
// row at warn level; anything else (a restart, a rollout, while the next
// address may answer) at debug level.
func (c *Client) logStreamError(addr string, err error, reason string, allFailed bool, retryIn time.Duration) {
	args := []any{"server", addr, "error", err, "retry_in", retryIn}
	switch {
	case tooLarge(err):
		if m := messageSizes.FindStringSubmatch(err.Error()); m != nil {
			size, _ := strconv.Atoi(m[1])
			limit, _ := strconv.Atoi(m[2])
			args = append(args, "size_bytes", size, "limit_bytes", limit)
		}
		c.log.Error("xDS response larger than the message size limit; the resources of this stream stay stale until it fits (raise the limit: WithMaxRecvMsgSize)", args...)
	case reason == reasonNoResponse:
		c.log.Warn("control plane accepted the stream but did not answer; trying the next address", args...)
	case refused(err):
		c.log.Warn("control plane refused the ADS stream; check the client's credentials and the server address", args...)
	case allFailed:
		c.log.Warn("every control plane address failed in a row; keeping the last resources received", args...)
	default:
		c.log.Debug("ADS stream failed", args...)
	}
}
