package redisstore

import "syscall"

// dieWithParent makes a child die with the test binary, so that a test
// killed by its timeout leaves no redis-server behind.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
