// Package secretservice starts a private Secret Service for tests: a D-Bus
// session bus and a gnome-keyring-daemon on it, with their own home and XDG
// directories, so that keyring tests touch neither the user's keyring nor
// the user's bus.
//
// # Readiness
//
// Start returns once the service can do what the tests will ask of it: the
// bus printed its address, the daemon started there (not another one) owns
// org.freedesktop.secrets, its login collection exists and is unlocked, and
// the caller's own probe succeeds. It waits for each of these up to a
// generous bound, for a machine busy with other tests, and says which one
// did not happen.
//
// The bus has no service directories, so nothing on it can be started by
// D-Bus activation: a request that arrives before the daemon has claimed
// its name fails and is retried, instead of starting a second daemon that
// nobody unlocked and nobody stops.
//
// # Processes
//
// Every process started here, and any it starts, carries a marker in its
// environment. [Service.Close] kills the bus and the daemon with their
// process groups, then looks for processes that still carry the marker
// (on Linux), kills them, and reports them as an error.
package secretservice

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/syncbuf"
)

// Service is a running private Secret Service.
type Service struct {
	// Address is the session bus address, for DBUS_SESSION_BUS_ADDRESS.
	Address string

	dir    string // home of both processes; also the marker's value
	bus    *proc
	daemon *proc
}

// proc is a started program.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    syncbuf.Buffer // stderr, and stdout where it is not read
	exited chan struct{}  // closed once the process has been waited for
}

// ErrMissing is matched by Start's error when the programs are not
// installed.
var ErrMissing = errors.New("dbus-daemon, dbus-send or gnome-keyring-daemon not installed (Debian packages dbus and gnome-keyring)")

// MarkerEnv is set, in the environment of every process a Service starts,
// to a value unique to that Service.
const MarkerEnv = "TOKENKEEP_SECRET_SERVICE"

// ReadyTimeout bounds each step of Start. Each takes well under a second on
// an idle machine.
const ReadyTimeout = 60 * time.Second

// password unlocks the private login keyring.
const password = "tokenkeep-test-keyring-password"

// Start starts the bus and the daemon and waits until they are ready (see
// the package documentation) and ready answers nil. ready is implemented by
// the caller with a keyring call on the new bus; it is called repeatedly
// until it succeeds. Start does not change the caller's environment.
func Start(ready func(address string) error) (*Service, error) {
	for _, prog := range []string{"dbus-daemon", "dbus-send", "gnome-keyring-daemon"} {
		if _, err := exec.LookPath(prog); err != nil {
			return nil, fmt.Errorf("secretservice: %s: %w", prog, ErrMissing)
		}
	}
	dir, err := os.MkdirTemp("", "tokenkeep-secret-service-")
	if err != nil {
		return nil, err
	}
	s := &Service{dir: dir}
	if err := s.start(ready); err != nil {
		if cerr := s.Close(); cerr != nil {
			err = fmt.Errorf("%w; then %v", err, cerr)
		}
		return nil, err
	}
	return s, nil
}

// Marker returns the value of MarkerEnv in this Service's processes.
func (s *Service) Marker() string { return s.dir }

func (s *Service) env() ([]string, error) {
	env := []string{"HOME=" + s.dir, "PATH=" + os.Getenv("PATH"), MarkerEnv + "=" + s.dir}
	for _, v := range []string{"XDG_RUNTIME_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"} {
		d := filepath.Join(s.dir, strings.ToLower(v))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		env = append(env, v+"="+d)
	}
	return env, nil
}

// busConfig is a session bus that listens on one socket, lets its clients
// do anything, and has no service directories: nothing is activated.
const busConfig = `<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`

func (s *Service) start(ready func(string) error) error {
	env, err := s.env()
	if err != nil {
		return err
	}
	conf := filepath.Join(s.dir, "bus.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, busConfig, filepath.Join(s.dir, "bus")), 0o600); err != nil {
		return err
	}

	s.bus = &proc{name: "dbus-daemon"}
	bus := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile", "--print-address=1")
	bus.Env = env
	stdout, err := bus.StdoutPipe()
	if err != nil {
		return err
	}
	if err := s.bus.start(bus); err != nil {
		return err
	}
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addr <- strings.TrimSpace(line)
		io.Copy(&s.bus.out, stdout)
	}()
	timer := time.NewTimer(ReadyTimeout)
	defer timer.Stop()
	select {
	case s.Address = <-addr:
	case <-s.bus.exited:
		return s.bus.failed("exited before it printed its address")
	case <-timer.C:
		return s.bus.failed(fmt.Sprintf("printed no address in %v", ReadyTimeout))
	}
	if s.Address == "" {
		return s.bus.failed("printed an empty address")
	}

	s.daemon = &proc{name: "gnome-keyring-daemon"}
	kd := exec.Command("gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets")
	kd.Env = append(env, "DBUS_SESSION_BUS_ADDRESS="+s.Address)
	kd.Stdin = strings.NewReader(password)
	if err := s.daemon.start(kd); err != nil {
		return err
	}

	steps := []struct {
		what  string
		check func() error
	}{
		{"own org.freedesktop.secrets on the bus", s.owned},
		{"unlock its login collection", s.unlocked},
		{"answer the caller's probe", func() error { return ready(s.Address) }},
	}
	for _, step := range steps {
		if err := s.await(step.check); err != nil {
			return s.daemon.failed(fmt.Sprintf("did not %s: %v", step.what, err))
		}
	}
	return nil
}

// await calls check until it returns nil, the daemon or the bus exits, or
// ReadyTimeout passes, and returns the last error.
func (s *Service) await(check func() error) error {
	deadline := time.NewTimer(ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-s.daemon.exited:
			return fmt.Errorf("it exited (%v); last: %v", s.daemon.cmd.ProcessState, err)
		case <-s.bus.exited:
			return fmt.Errorf("the bus exited (%v); its output: %q; last: %v", s.bus.cmd.ProcessState, s.bus.out.String(), err)
		case <-deadline.C:
			return fmt.Errorf("not in %v; last: %v", ReadyTimeout, err)
		}
	}
}

// owned reports whether the daemon started here owns the Secret Service's
// name on the bus.
func (s *Service) owned() error {
	out, err := s.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
		"org.freedesktop.DBus.GetConnectionUnixProcessID", "string:org.freedesktop.secrets")
	if err != nil {
		return err
	}
	if f := strings.Fields(out); len(f) < 2 || f[len(f)-2] != "uint32" || f[len(f)-1] != fmt.Sprint(s.daemon.cmd.Process.Pid) {
		return fmt.Errorf("org.freedesktop.secrets is owned by another process: %q", out)
	}
	return nil
}

// unlocked reports whether the login collection exists and is unlocked.
func (s *Service) unlocked() error {
	out, err := s.call("org.freedesktop.secrets", "/org/freedesktop/secrets/collection/login",
		"org.freedesktop.DBus.Properties.Get", "string:org.freedesktop.Secret.Collection", "string:Locked")
	if err != nil {
		return err
	}
	if f := strings.Fields(out); len(f) < 2 || f[len(f)-2] != "boolean" || f[len(f)-1] != "false" {
		return fmt.Errorf("the login collection is locked: %q", out)
	}
	return nil
}

// call makes one method call on the bus with dbus-send and returns the
// reply without its header line.
func (s *Service) call(dest, path, method string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	argv := append([]string{"--bus=" + s.Address, "--print-reply", "--reply-timeout=5000", "--dest=" + dest, path, method}, args...)
	out, err := exec.CommandContext(ctx, "dbus-send", argv...).CombinedOutput()
	text := strings.TrimSpace(string(out))
	if err != nil {
		return "", fmt.Errorf("%s: %v: %s", method, err, text)
	}
	if _, reply, ok := strings.Cut(text, "\n"); ok {
		return strings.TrimSpace(reply), nil
	}
	return "", fmt.Errorf("%s: no reply: %q", method, text)
}

func (p *proc) start(cmd *exec.Cmd) error {
	p.cmd = cmd
	if cmd.Stdout == nil { // not piped
		cmd.Stdout = &p.out
	}
	cmd.Stderr = &p.out
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("secretservice: start %s: %w", p.name, err)
	}
	p.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return nil
}

// failed describes how p did not start, with what it wrote.
func (p *proc) failed(what string) error {
	return fmt.Errorf("secretservice: %s %s; its output:\n%s", p.name, what, p.out.String())
}

// stop kills p's process group and waits for p, for up to a bound.
func (p *proc) stop() error {
	if p == nil || p.cmd == nil || p.exited == nil {
		return nil
	}
	killGroup(p.cmd)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timer.C:
		return fmt.Errorf("%s (pid %d) did not exit when killed", p.name, p.cmd.Process.Pid)
	}
}

// Close ends the daemon and the bus, kills any other process that carries
// this Service's marker, and removes the directories. Its error names any
// process that had to be killed that way or would not die.
func (s *Service) Close() error {
	errs := []error{s.daemon.stop(), s.bus.stop()}
	if left := Survivors(s.dir); len(left) > 0 {
		for _, p := range left {
			kill(p.Pid)
		}
		errs = append(errs, fmt.Errorf("secretservice: processes left behind, killed: %v", left))
	}
	errs = append(errs, os.RemoveAll(s.dir))
	return errors.Join(errs...)
}

// Stop is Close for callers that cannot handle its error: it writes the
// error to stderr.
func (s *Service) Stop() {
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// A Process is a running process found by Survivors.
type Process struct {
	Pid  int
	Name string
}

func (p Process) String() string { return fmt.Sprintf("%s (pid %d)", p.Name, p.Pid) }
