package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is one child process whose output goes to a log file.
type process struct {
	name    string
	path    string
	args    []string
	logPath string

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// start starts the process; a goroutine owned by p waits for its exit.
func (p *process) start() error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("fairway/testenv: %w", err)
	}
	fmt.Fprintf(logFile, "==== %s starting at %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	p.cmd = exec.Command(p.path, p.args...)
	p.cmd.Stdout = logFile
	p.cmd.Stderr = logFile
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("fairway/testenv: start %s: %w", p.name, err)
	}
	p.done = make(chan struct{})
	go func() {
		p.waitErr = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return nil
}

// stop sends SIGTERM, waits up to timeout, then kills the process, and
// returns once it has exited.
func (p *process) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil // already exited (an unexpected exit shows in its log)
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("fairway/testenv: stop %s: %w", p.name, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("fairway/testenv: %s did not stop within %v after SIGTERM; killed", p.name, timeout)
}
