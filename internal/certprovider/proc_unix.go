//go:build unix

package certprovider

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
)

// ownGroup makes cmd the leader of a new process group, so that whatever it
// starts can be found and ended with it.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup kills cmd's process group.
func killGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// groupLeft reports, after cmd has been waited for, whether any process of
// its group is still running, and kills the group if so.
func groupLeft(cmd *exec.Cmd) error {
	err := syscall.Kill(-cmd.Process.Pid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	killGroup(cmd)
	return fmt.Errorf("a process of the provider's group (%d) was still running after it exited (%v); killed", cmd.Process.Pid, err)
}
