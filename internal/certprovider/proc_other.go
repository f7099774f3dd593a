//go:build !unix

package certprovider

import "os/exec"

func ownGroup(cmd *exec.Cmd)        {}
func killGroup(cmd *exec.Cmd)       { cmd.Process.Kill() }
func groupLeft(cmd *exec.Cmd) error { return nil }
