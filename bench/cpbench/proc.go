package cpbench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// controlPlane is the fairway control plane running as a child process.
type controlPlane struct {
	cmd       *exec.Cmd
	xdsAddr   string
	adminAddr string
	logPath   string
	done      chan struct{} // closed when the process has exited
	waitErr   error         // set before done is closed
}

// buildFairway builds cmd/fairway into dir with the Go toolchain.
func buildFairway(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "fairway")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/fairway-lb/fairway/cmd/fairway")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("fairway/cpbench: go build cmd/fairway (set the fairway binary to skip this): %w\n%s", err, out)
	}
	return bin, nil
}

// startControlPlane starts `fairway controlplane` on free loopback ports,
// logging into dir.
func startControlPlane(bin, kubeconfig, namespace string, debounce time.Duration, dir string) (*controlPlane, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	cp := &controlPlane{
		xdsAddr:   "127.0.0.1:" + strconv.Itoa(ports[0]),
		adminAddr: "127.0.0.1:" + strconv.Itoa(ports[1]),
		logPath:   filepath.Join(dir, "controlplane.log"),
		done:      make(chan struct{}),
	}
	logFile, err := os.OpenFile(cp.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fairway/cpbench: %w", err)
	}
	cp.cmd = exec.Command(bin, "controlplane",
		"--kubeconfig", kubeconfig,
		"--namespace", namespace,
		"--xds-addr", cp.xdsAddr,
		"--admin-addr", cp.adminAddr,
		"--debounce", debounce.String(),
		"--auth", "none", // the benchmark's ADS clients measure convergence and send no token
		"--log-level", "warn")
	cp.cmd.Stdout = logFile
	cp.cmd.Stderr = logFile
	cp.cmd.SysProcAttr = sysProcAttr()
	if err := cp.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("fairway/cpbench: start control plane: %w", err)
	}
	go func() {
		cp.waitErr = cp.cmd.Wait()
		logFile.Close()
		close(cp.done)
	}()
	return cp, nil
}

// waitReady polls /readyz until it answers 200.
func (cp *controlPlane) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cp.adminAddr+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-cp.done:
			return fmt.Errorf("fairway/cpbench: control plane exited before ready: %v\n%s", cp.waitErr, cp.logTail())
		case <-ctx.Done():
			return fmt.Errorf("fairway/cpbench: control plane not ready within %v\n%s", timeout, cp.logTail())
		case <-tick.C:
		}
	}
}

// exited reports an unexpected exit of the process.
func (cp *controlPlane) exited() error {
	select {
	case <-cp.done:
		return fmt.Errorf("fairway/cpbench: control plane exited: %v\n%s", cp.waitErr, cp.logTail())
	default:
		return nil
	}
}

// stop sends SIGTERM, waits up to 10s, then kills the process.
func (cp *controlPlane) stop() error {
	select {
	case <-cp.done:
		return nil
	default:
	}
	if err := cp.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("fairway/cpbench: stop control plane: %w", err)
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-cp.done:
		return nil
	case <-t.C:
	}
	_ = cp.cmd.Process.Kill()
	<-cp.done
	return errors.New("fairway/cpbench: control plane did not stop within 10s of SIGTERM; killed")
}

// logTail is the end of the process's log.
func (cp *controlPlane) logTail() string {
	b, err := os.ReadFile(cp.logPath)
	if err != nil {
		return ""
	}
	const max = 8 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "control plane log (" + cp.logPath + "):\n" + string(b)
}

// Mem is a process's resident memory from /proc/PID/status.
type Mem struct {
	RSS  uint64 // VmRSS, bytes
	Peak uint64 // VmHWM, bytes
}

func readMem(pid int) (Mem, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Mem{}, fmt.Errorf("fairway/cpbench: %w", err)
	}
	var m Mem
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		default:
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return Mem{}, fmt.Errorf("fairway/cpbench: parse %s %q: %w", k, v, err)
		}
		*dst = kb << 10
	}
	return m, nil
}

// readCPU is the process's user + system CPU time from /proc/PID/stat.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("fairway/cpbench: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// fields from 3 on follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("fairway/cpbench: malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("fairway/cpbench: short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("fairway/cpbench: parse /proc/PID/stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("fairway/cpbench: pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Machine describes the host the benchmark ran on.
type Machine struct {
	CPUs     int     // runtime.NumCPU
	CPUModel string  // /proc/cpuinfo "model name"
	MemTotal uint64  // /proc/meminfo MemTotal, bytes
	LoadAvg  float64 // 1-minute load average when the run started
}

func readMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				m.MemTotal = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAvg, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return m
}
