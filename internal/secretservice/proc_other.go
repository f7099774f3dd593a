//go:build !unix

package secretservice

import (
	"os"
	"os/exec"
)

func ownGroup(cmd *exec.Cmd)  {}
func killGroup(cmd *exec.Cmd) { cmd.Process.Kill() }

func kill(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill()
	}
}
