// Package nodeclient runs an independent proxyless gRPC client for interop
// tests: Node.js with @grpc/grpc-js and @grpc/grpc-js-xds from the npm
// registry, driven over stdin and stdout (hack/nodeclient/client.js) by
// internal/interopclient.
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
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/interopclient"
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

// Client is a running Node client process (see interopclient.Client).
type Client = interopclient.Client

// Result is what a Calls command returned.
type Result = interopclient.Result

// Start starts a Node client bootstrapped to the xDS server at controlPlane
// (node id nodeID, locality zone "zone-a") and waits until it is ready. Its
// Versions name node, grpc-js and grpc-js-xds.
func Start(t testing.TB, controlPlane, nodeID string) *Client {
	t.Helper()
	modules := Install(t)
	dir, err := scriptDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join(dir, "client.js"))
	cmd.Env = append(os.Environ(),
		"NODE_PATH="+filepath.Join(modules, "node_modules"),
		"GRPC_XDS_BOOTSTRAP=",
		"GRPC_XDS_BOOTSTRAP_CONFIG="+interopclient.Bootstrap(controlPlane, nodeID))
	return interopclient.Start(t, "node", cmd)
}
