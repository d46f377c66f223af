//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// childEnv, set in the environment of a re-executed test binary, makes it
// run as a child process of a fault test instead of running the tests:
// "fairway" runs the fairway command with the binary's arguments (the same
// code as the fairway binary), "backend" runs a testbackend until SIGTERM,
// "xdsclient" makes calls through grpc-go's xds:/// resolver.
const childEnv = "FAIRWAY_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "fairway":
		main() // exits
	case "backend":
		os.Exit(runBackendChild(os.Args[1:]))
	case "xdsclient":
		os.Exit(runXDSClientChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runBackendChild serves a testbackend as flags describe, prints "serving"
// once it listens, and stops on SIGTERM or SIGINT.
func runBackendChild(args []string) int {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	addr := fs.String("addr", "", "address to listen on")
	name := fs.String("name", "", "backend name")
	delay := fs.Duration("delay", 0, "least time each RPC takes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	b, err := testbackend.Start(*addr, testbackend.WithName(*name), testbackend.WithDelay(*delay))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("serving", b.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	b.Stop()
	return 0
}

// process is a child process of a test: this test binary re-executed with
// childEnv set. It is SIGKILLed when the test ends, and dies with the test
// binary (Pdeathsig).
type process struct {
	t    *testing.T
	role string
	cmd  *exec.Cmd
	out  *testkit.LogBuffer // stdout and stderr
	done chan struct{}      // closed once the process has exited
}

func startProcess(t *testing.T, role string, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, role, nil, args...)
}

// startProcessEnv is startProcess with env added to the child's environment.
func startProcessEnv(t *testing.T, role string, env []string, args ...string) *process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, role: role, cmd: exec.Command(exe, args...), out: &testkit.LogBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), env...), childEnv+"="+role)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s %v output:\n%s", role, args, p.out)
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to exit.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL) // fails only when it has exited
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s (pid %d) still running 10s after SIGKILL", p.role, p.cmd.Process.Pid)
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitUntil waits at most d for cond, failing the test at once (with the
// process's output) if the process exits first.
func (p *process) waitUntil(d time.Duration, what string, cond func() bool) {
	p.t.Helper()
	within(p.t, d, what, func() bool { return cond() || p.exited() }, nil)
	if p.exited() && !cond() {
		p.t.Fatalf("%s exited (%v) before %s; output:\n%s", p.role, p.cmd.ProcessState, what, p.out)
	}
}

// startControlPlaneProcess runs `fairway controlplane --file path` as a
// separate process serving xDS on xdsAddr, and waits until it is ready.
func startControlPlaneProcess(t *testing.T, path, xdsAddr string) *process {
	t.Helper()
	adminAddr := testkit.FreeAddr(t)
	p := startProcess(t, "fairway", "controlplane", "--auth", "none", "--file", path, "--xds-addr", xdsAddr, "--admin-addr", adminAddr, "--debounce", "10ms")
	p.waitUntil(20*time.Second, "the control plane to become ready", func() bool { return readyz(adminAddr) })
	return p
}

// startBackendProcesses runs one testbackend process per IP, all on one
// port, named "pod-<ip>", each RPC taking at least delay.
func startBackendProcesses(t *testing.T, ips []string, delay time.Duration) ([]*process, int) {
	t.Helper()
	for attempt := 0; attempt < 10; attempt++ {
		_, port, err := net.SplitHostPort(testkit.FreeAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		var pods []*process
		for _, ip := range ips {
			pods = append(pods, startProcess(t, "backend", "-addr", ip+":"+port, "-name", "pod-"+ip, "-delay", delay.String()))
		}
		all := true
		for _, p := range pods {
			within(t, 10*time.Second, p.role+" to listen or exit", func() bool { return p.exited() || strings.Contains(p.out.String(), "serving") }, nil)
			all = all && !p.exited()
		}
		if all {
			n, err := strconv.Atoi(port)
			if err != nil {
				t.Fatal(err)
			}
			return pods, n
		}
		for _, p := range pods {
			p.kill() // the port was taken on one of the IPs: try another
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return nil, 0
}

// readyz reports whether the admin server at adminAddr answers /readyz with
// 200.
func readyz(adminAddr string) bool {
	resp, err := http.Get("http://" + adminAddr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
