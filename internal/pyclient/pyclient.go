// Package pyclient runs an independent proxyless gRPC client on gRPC C-core
// for interop tests: Python with Debian's python3-grpcio, driven over stdin
// and stdout (hack/pyclient/client.py) by internal/interopclient.
//
// python3-grpcio is installed by hack/pyclient/install.sh ("make pyclient",
// which "make test" runs first) with apt-get when /usr/bin/python3 cannot
// import grpc. Start runs the same script, so a test installs it itself on a
// machine where it is missing. Tests never skip: a missing python3, or an
// install that fails, fails the test and says why.
//
// The client runs /usr/bin/python3, not the python3 first on PATH: a pyenv or
// virtualenv interpreter does not see Debian's packages.
package pyclient

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/interopclient"
)

// Python is the interpreter the client runs on: Debian's, which sees
// python3-grpcio.
const Python = "/usr/bin/python3"

// CustomLBConfigEnv is the switch of C-core 1.51 for gRFC A52 (custom LB
// policies): "true" makes it read Cluster.load_balancing_policy, as current
// C-core always does (grpc/grpc#32888 removed the switch); otherwise it
// reads only lb_policy.
const CustomLBConfigEnv = "GRPC_EXPERIMENTAL_XDS_CUSTOM_LB_CONFIG"

// InstallTimeout bounds an install (apt-get over the network).
const InstallTimeout = 5 * time.Minute

// Install makes sure python3-grpcio is installed (running
// hack/pyclient/install.sh, which returns at once when it is) and returns
// its version, failing the test if it cannot.
func Install(t testing.TB) string {
	t.Helper()
	dir, err := interopclient.HackDir("pyclient", "client.py")
	if err != nil {
		t.Fatal(err)
	}
	return interopclient.Install(t, dir, "the C-core interop tests need "+Python+" with python3-grpcio, installed with apt-get as root", InstallTimeout)
}

// Start starts a C-core client bootstrapped to the xDS server at
// controlPlane (node id nodeID, locality zone "zone-a") with the
// environment variables env ("NAME=value") added, and waits until it is
// ready. Its Versions name python and grpcio. Every channel of the process
// shares one xDS client (one ADS stream); a channel applies the xDS updates
// it got only when an RPC runs.
func Start(t testing.TB, controlPlane, nodeID string, env ...string) *interopclient.Client {
	t.Helper()
	Install(t)
	dir, err := interopclient.HackDir("pyclient", "client.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Python, filepath.Join(dir, "client.py"))
	cmd.Dir = t.TempDir() // where a crashing C-core leaves its core file, if any
	cmd.Env = append(interopclient.Environ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"), "GRPC_XDS_BOOTSTRAP_CONFIG="+interopclient.Bootstrap(controlPlane, nodeID))
	cmd.Env = append(cmd.Env, env...)
	return interopclient.Start(t, "python", cmd)
}
