package secretservice

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// Survivors returns the running processes whose environment sets MarkerEnv
// to marker: what a Service started, directly or not, and left running.
// Zombies are not counted: they have ended.
func Survivors(marker string) []Process {
	want := []byte(MarkerEnv + "=" + marker + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var found []Process
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil || zombie(stat) {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join(d, "comm"))
		found = append(found, Process{Pid: pid, Name: string(bytes.TrimSpace(comm))})
	}
	return found
}

// zombie reports whether a /proc/<pid>/stat line is a zombie's: its state,
// after the parenthesised command name, is Z.
func zombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
