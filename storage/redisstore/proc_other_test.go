//go:build !linux

package redisstore

import "syscall"

// dieWithParent is a no-op where the system cannot tie a child's life to
// its parent's.
func dieWithParent() *syscall.SysProcAttr { return nil }
