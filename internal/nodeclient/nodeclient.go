// Package nodeclient runs an independent proxyless gRPC client for interop
// tests: Node.js with @grpc/grpc-js and @grpc/grpc-js-xds from the npm
// registry, driven over stdin and stdout (hack/nodeclient/client.js).
//
// The npm packages, pinned by hack/nodeclient/package-lock.json, are
// installed by hack/nodeclient/install.sh ("make nodeclient", which "make
// test" runs first) into a cache folder, by default
// $HOME/.cache/fairway/node/<hash of the lock file>, or the folder named by
// the FAIRWAY_NODECLIENT environment variable. Install runs the same script,
// so a test installs them itself on a machine where nothing is cached yet.
// Tests never skip: a missing node or npm, or a failed install, fails the
// test and says why.
package nodeclient

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
	"strings"
	"testing"
	"time"
)

// InstallDirEnv names the environment variable that overrides the folder
// the npm packages are installed into.
const InstallDirEnv = "FAIRWAY_NODECLIENT"

// InstallTimeout bounds a first install (npm ci over the network).
const InstallTimeout = 5 * time.Minute

// scriptDir is hack/nodeclient of the source tree this package is built from.
func scriptDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("fairway/nodeclient: cannot locate the source tree")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "hack", "nodeclient")
	if _, err := os.Stat(filepath.Join(dir, "client.js")); err != nil {
		return "", fmt.Errorf("fairway/nodeclient: %w", err)
	}
	return dir, nil
}

// Install makes sure the npm packages are installed (running
// hack/nodeclient/install.sh, which returns at once when they are) and
// returns their folder, failing the test if it cannot.
func Install(t testing.TB) string {
	t.Helper()
	dir, err := scriptDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "install.sh"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("fairway/nodeclient: starting install.sh: %v", err)
	}
	timer := time.AfterFunc(InstallTimeout, func() { _ = cmd.Process.Kill() })
	err = cmd.Wait()
	timer.Stop()
	if err != nil {
		t.Fatalf("fairway/nodeclient: hack/nodeclient/install.sh (the Node interop tests need node and npm, and the npm registry on first run): %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines[len(lines)-1]
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

// Client is a running Node client process. Its methods must not be called
// concurrently; the process is stopped when the test ends.
type Client struct {
	// Versions are the versions of node, grpc-js and grpc-js-xds that run.
	Versions map[string]string

	t        testing.TB
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	replies  chan []byte   // one per stdout line; closed at EOF
	stderr   string        // file holding the process's stderr
	stopping chan struct{} // closed when the test ends
	exited   chan struct{} // closed once the process has been waited for
}

// Start starts a Node client bootstrapped to the xDS server at controlPlane
// (node id nodeID, locality zone "zone-a") and waits until it is ready.
func Start(t testing.TB, controlPlane, nodeID string) *Client {
	t.Helper()
	modules := Install(t)
	dir, err := scriptDir()
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}]}],`+
		`"node":{"id":%q,"locality":{"zone":"zone-a"}}}`, controlPlane, nodeID)
	cmd := exec.Command("node", filepath.Join(dir, "client.js"))
	cmd.Env = append(os.Environ(),
		"NODE_PATH="+filepath.Join(modules, "node_modules"),
		"GRPC_XDS_BOOTSTRAP=",
		"GRPC_XDS_BOOTSTRAP_CONFIG="+bootstrap)
	c := &Client{t: t, cmd: cmd, replies: make(chan []byte, 1), stderr: filepath.Join(t.TempDir(), "node.stderr"),
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
		t.Fatalf("fairway/nodeclient: starting node: %v", err)
	}
	go c.read(stdout)
	t.Cleanup(c.stop)
	var ready struct {
		Versions map[string]string `json:"versions"`
	}
	if err := json.Unmarshal(c.await(30*time.Second, "the client to start"), &ready); err != nil {
		t.Fatalf("fairway/nodeclient: ready line: %v", err)
	}
	c.Versions = ready.Versions
	return c
}

// Calls makes n UnaryCalls, one after the other, on the client's channel to
// xds:///target (created on first use and kept open), each with a 5 s
// deadline.
func (c *Client) Calls(target string, n int) Result {
	c.t.Helper()
	const perCall = 5 * time.Second
	c.send(map[string]any{"op": "calls", "target": target, "n": n, "timeout_ms": perCall.Milliseconds()})
	var r Result
	line := c.await(time.Duration(n)*perCall+10*time.Second, fmt.Sprintf("%d calls to %s", n, target))
	if err := json.Unmarshal(line, &r); err != nil {
		c.t.Fatalf("fairway/nodeclient: reply %q: %v", line, err)
	}
	return r
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
		return fmt.Sprintf("(reading node's stderr: %v)", err)
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
		c.t.Fatalf("fairway/nodeclient: writing to node: %v; stderr:\n%s", err, c.Stderr())
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
			c.t.Fatalf("fairway/nodeclient: node exited while waiting for %s; stderr:\n%s", what, c.Stderr())
		}
		var failed struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(line, &failed) == nil && failed.Error != "" {
			c.t.Fatalf("fairway/nodeclient: %s: %s", what, failed.Error)
		}
		return line
	case <-timer.C:
		c.t.Fatalf("fairway/nodeclient: no reply after %v waiting for %s; stderr:\n%s", d, what, c.Stderr())
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
		c.t.Logf("node client stderr:\n%s", out)
	}
}
