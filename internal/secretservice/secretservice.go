// Package secretservice starts a private Secret Service for tests: a D-Bus
// session bus and a gnome-keyring-daemon on it, with their own home and XDG
// directories, so that keyring tests touch neither the user's keyring nor
// the user's bus.
package secretservice

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Service is a running private Secret Service.
type Service struct {
	// Address is the session bus address, for DBUS_SESSION_BUS_ADDRESS.
	Address string

	dir   string
	procs []*exec.Cmd
}

// ErrMissing is matched by Start's error when the programs are not
// installed.
var ErrMissing = errors.New("dbus-daemon or gnome-keyring-daemon not installed (Debian packages dbus and gnome-keyring)")

// Start starts the bus and the daemon and waits until ready answers nil,
// which the caller implements with a keyring call on the new bus. Start
// does not change the caller's environment.
func Start(ready func(address string) error) (*Service, error) {
	for _, prog := range []string{"dbus-daemon", "gnome-keyring-daemon"} {
		if _, err := exec.LookPath(prog); err != nil {
			return nil, fmt.Errorf("%s: %w", prog, ErrMissing)
		}
	}
	dir, err := os.MkdirTemp("", "tokenkeep-secret-service-")
	if err != nil {
		return nil, err
	}
	s := &Service{dir: dir}
	if err := s.start(ready); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Service) start(ready func(string) error) error {
	env := []string{"HOME=" + s.dir, "PATH=" + os.Getenv("PATH")}
	for _, v := range []string{"XDG_RUNTIME_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"} {
		d := filepath.Join(s.dir, strings.ToLower(v))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		env = append(env, v+"="+d)
	}

	bus := exec.Command("dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1",
		"--address=unix:path="+filepath.Join(s.dir, "bus"))
	bus.Env = env
	out, err := bus.StdoutPipe()
	if err != nil {
		return err
	}
	if err := bus.Start(); err != nil {
		return fmt.Errorf("start dbus-daemon: %w", err)
	}
	s.procs = append(s.procs, bus)
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addrc <- strings.TrimSpace(line)
	}()
	select {
	case s.Address = <-addrc:
	case <-time.After(10 * time.Second):
		return errors.New("dbus-daemon printed no address")
	}
	if s.Address == "" {
		return errors.New("dbus-daemon printed no address")
	}

	kd := exec.Command("gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets")
	kd.Env = append(env, "DBUS_SESSION_BUS_ADDRESS="+s.Address)
	kd.Stdin = strings.NewReader("tokenkeep-test-keyring-password")
	if err := kd.Start(); err != nil {
		return fmt.Errorf("start gnome-keyring-daemon: %w", err)
	}
	s.procs = append(s.procs, kd)

	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ready(s.Address)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gnome-keyring-daemon did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends the daemons and removes their directories.
func (s *Service) Stop() {
	for _, p := range s.procs {
		p.Process.Kill()
		p.Wait()
	}
	os.RemoveAll(s.dir)
}
