//go:build !linux

package testenv

import "syscall"

// sysProcAttr puts the child in its own process group so a terminal's Ctrl-C
// reaches only the parent, which then stops it in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
