//go:build !linux

package cpbench

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
