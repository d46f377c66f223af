// Package interopclient drives an independent proxyless gRPC client process
// for interop tests over stdin and stdout, one JSON line per command and
// reply. internal/nodeclient (Node.js, hack/nodeclient/client.js) and
// internal/pyclient (gRPC C-core through Python, hack/pyclient/client.py)
// start such processes; this package speaks their common protocol:
//
//   - at start the process prints {"ready":true,"versions":{...}};
//   - {"op":"calls","target":T,"n":N,"timeout_ms":MS,"metadata":{...}} makes
//     N unary RPCs, one after the other, on the process's channel to
//     xds:///T (created on first use and kept open) and is answered
//     {"served":[backend,...],"errors":["14 UNAVAILABLE: ...",...]};
//   - {"op":"connect","target":T} creates the channel to xds:///T if there is
//     none and asks it to connect, without an RPC, and is answered {} at once;
//   - {"op":"close","target":T} closes that channel and is answered {};
//   - a command the process cannot run is answered {"error":"..."};
//   - at end of input the process closes its channels and exits.
package interopclient

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// HackDir is hack/<name> of the source tree this package is built from,
// where a client's script file and its install.sh are.
func HackDir(name, file string) (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("fairway/interopclient: cannot locate the source tree")
	}
	dir := filepath.Join(filepath.Dir(self), "..", "..", "hack", name)
	if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
		return "", fmt.Errorf("fairway/interopclient: %w", err)
	}
	return dir, nil
}

// Install runs dir/install.sh, which installs a client's libraries unless
// they are there already, killing it after timeout, and returns the last
// line of its output. If the script fails, Install fails the test with
// need (what the tests need, for the reader) and the script's stderr.
func Install(t testing.TB, dir, need string, timeout time.Duration) string {
	t.Helper()
	script := filepath.Join(dir, "install.sh")
	cmd := exec.Command(script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("fairway/interopclient: starting %s: %v", script, err)
	}
	timer := time.AfterFunc(timeout, func() { _ = cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	if err != nil {
		t.Fatalf("fairway/interopclient: %s (%s): %v\n%s", script, need, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines[len(lines)-1]
}

// Bootstrap is the xDS bootstrap (GRPC_XDS_BOOTSTRAP_CONFIG) of a client
// of the xDS server at controlPlane, with node id nodeID in zone "zone-a".
func Bootstrap(controlPlane, nodeID string) string {
	return fmt.Sprintf(`{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}]}],`+
		`"node":{"id":%q,"locality":{"zone":"zone-a"}}}`, controlPlane, nodeID)
}

// Result is what a Calls command returned.
type Result struct {
	// Served names, for each successful RPC in order, the backend that
	// served it.
	Served []string `json:"served"`
	// Errors holds each failed RPC's status ("14 UNAVAILABLE: ...").
	Errors []string `json:"errors"`
}

// Counts is the number of RPCs each backend served.
func (r Result) Counts() map[string]int {
	m := map[string]int{}
	for _, b := range r.Served {
		m[b]++
	}
	return m
}

// Client is a running client process. Its methods must not be called
// concurrently; the process is stopped when the test ends.
type Client struct {
	// Versions are the versions the process reported when it started
	// (runtime and gRPC libraries).
	Versions map[string]string

	t        testing.TB
	name     string // names the process in failures: "node", "python"
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	replies  chan []byte   // one per stdout line; closed at EOF
	stderr   string        // file holding the process's stderr
	stopping chan struct{} // closed when the test ends
	exited   chan struct{} // closed once the process has been waited for
}

// Start starts cmd, whose Stdin, Stdout and Stderr must be unset, and waits
// until it is ready. name names the process in failures. The process is
// stopped when the test ends; on a failed test its stderr is logged.
func Start(t testing.TB, name string, cmd *exec.Cmd) *Client {
	t.Helper()
	c := &Client{t: t, name: name, cmd: cmd, replies: make(chan []byte, 1),
		stderr:   filepath.Join(t.TempDir(), name+".stderr"),
		stopping: make(chan struct{}), exited: make(chan struct{})}
	stderr, err := os.Create(c.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close() // the child has its own copy
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("fairway/interopclient: starting %s: %v", name, err)
	}
	go c.read(stdout)
	t.Cleanup(c.stop)
	var ready struct {
		Versions map[string]string `json:"versions"`
	}
	if err := json.Unmarshal(c.await(30*time.Second, "the client to start"), &ready); err != nil {
		t.Fatalf("fairway/interopclient: %s's ready line: %v", name, err)
	}
	c.Versions = ready.Versions
	return c
}

// Calls makes n unary RPCs, one after the other, on the client's channel to
// xds:///target (created on first use and kept open), each with a 5 s
// deadline.
func (c *Client) Calls(target string, n int) Result {
	c.t.Helper()
	return c.CallsWithMetadata(target, n, nil)
}

// CallsWithMetadata is Calls with request metadata md on every RPC.
func (c *Client) CallsWithMetadata(target string, n int, md map[string]string) Result {
	c.t.Helper()
	const perCall = 5 * time.Second
	cmd := map[string]any{"op": "calls", "target": target, "n": n, "timeout_ms": perCall.Milliseconds()}
	if md != nil {
		cmd["metadata"] = md
	}
	c.send(cmd)
	var r Result
	line := c.await(time.Duration(n)*perCall+10*time.Second, fmt.Sprintf("%d calls to %s", n, target))
	if err := json.Unmarshal(line, &r); err != nil {
		c.t.Fatalf("fairway/interopclient: %s's reply %q: %v", c.name, line, err)
	}
	return r
}

// Connect creates the client's channel to xds:///target if there is none
// and asks it to connect, without making an RPC: the client fetches the
// target's xDS resources. It returns at once.
func (c *Client) Connect(target string) {
	c.t.Helper()
	c.send(map[string]any{"op": "connect", "target": target})
	c.await(10*time.Second, "connecting the channel to "+target)
}

// CloseChannel closes the client's channel to xds:///target.
func (c *Client) CloseChannel(target string) {
	c.t.Helper()
	c.send(map[string]any{"op": "close", "target": target})
	c.await(10*time.Second, "closing the channel to "+target)
}

// Stderr is what the process has written to stderr so far.
func (c *Client) Stderr() string {
	b, err := os.ReadFile(c.stderr)
	if err != nil {
		return fmt.Sprintf("(reading %s's stderr: %v)", c.name, err)
	}
	return string(b)
}

func (c *Client) send(cmd map[string]any) {
	c.t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.stdin.Write(append(b, '\n')); err != nil {
		c.t.Fatalf("fairway/interopclient: writing to %s: %v; stderr:\n%s", c.name, err, c.Stderr())
	}
}

// await returns the next reply, failing the test after d, when the process
// ends, or when the reply is an error.
func (c *Client) await(d time.Duration, what string) []byte {
	c.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case line, ok := <-c.replies:
		if !ok {
			c.t.Fatalf("fairway/interopclient: %s exited while waiting for %s; stderr:\n%s", c.name, what, c.Stderr())
		}
		var failed struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(line, &failed) == nil && failed.Error != "" {
			c.t.Fatalf("fairway/interopclient: %s: %s: %s", c.name, what, failed.Error)
		}
		return line
	case <-timer.C:
		c.t.Fatalf("fairway/interopclient: no reply from %s after %v waiting for %s; stderr:\n%s", c.name, d, what, c.Stderr())
		return nil
	}
}

// read forwards stdout lines to replies until EOF, then waits for the
// process. It is the only reader of stdout and owns the process's end.
func (c *Client) read(stdout io.Reader) {
	defer close(c.exited)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		select {
		case c.replies <- append([]byte(nil), sc.Bytes()...):
		case <-c.stopping: // nobody reads any more
		}
	}
	close(c.replies)
	_ = c.cmd.Wait()
}

// stop closes stdin (the client closes its channels and exits) and waits,
// killing the process if it does not exit within 10 s. On a failed test it
// logs the process's stderr.
func (c *Client) stop() {
	close(c.stopping)
	_ = c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	if out := c.Stderr(); c.t.Failed() && out != "" {
		c.t.Logf("%s client stderr:\n%s", c.name, out)
	}
}

// Environ is this process's environment for a client process: without the
// GRPC_* variables (a developer's GRPC_TRACE or GRPC_EXPERIMENTAL_* would
// change what the client does; the caller sets the ones it means) and
// without the variables named in drop.
func Environ(drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "GRPC_") || slices.Contains(drop, name) {
			continue
		}
		env = append(env, kv)
	}
	return env
}
