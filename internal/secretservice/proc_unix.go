//go:build unix

package secretservice

import (
	"os/exec"
	"syscall"
)

// ownGroup makes cmd the leader of a new process group, so that whatever it
// starts without leaving the group ends with it.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup kills cmd's process group.
func killGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

func kill(pid int) {
	syscall.Kill(pid, syscall.SIGKILL)
}
