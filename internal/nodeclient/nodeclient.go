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
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/interopclient"
)

// InstallDirEnv names the environment variable that overrides the folder
// the npm packages are installed into.
const InstallDirEnv = "FAIRWAY_NODECLIENT"

// InstallTimeout bounds a first install (npm ci over the network).
const InstallTimeout = 5 * time.Minute

// Install makes sure the npm packages are installed (running
// hack/nodeclient/install.sh, which returns at once when they are) and
// returns their folder, failing the test if it cannot.
func Install(t testing.TB) string {
	t.Helper()
	dir, err := interopclient.HackDir("nodeclient", "client.js")
	if err != nil {
		t.Fatal(err)
	}
	return interopclient.Install(t, dir, "the Node interop tests need node and npm, and the npm registry on first run", InstallTimeout)
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
	dir, err := interopclient.HackDir("nodeclient", "client.js")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join(dir, "client.js"))
	cmd.Env = append(interopclient.Environ("NODE_PATH", "NODE_OPTIONS"),
		"NODE_PATH="+filepath.Join(modules, "node_modules"),
		"GRPC_XDS_BOOTSTRAP_CONFIG="+interopclient.Bootstrap(controlPlane, nodeID))
	return interopclient.Start(t, "node", cmd)
}
