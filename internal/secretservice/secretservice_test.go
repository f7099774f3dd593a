package secretservice

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/zalando/go-keyring"
)

// start starts a Service whose readiness probe is what keyring tests do
// first: write, read and delete an item on the new bus.
func start(t *testing.T) *Service {
	t.Helper()
	svc, err := Start(func(addr string) error {
		os.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
		if err := keyring.Set("tokenkeep-probe", "probe", "x"); err != nil {
			return err
		}
		if _, err := keyring.Get("tokenkeep-probe", "probe"); err != nil {
			return err
		}
		return keyring.Delete("tokenkeep-probe", "probe")
	})
	if errors.Is(err, ErrMissing) {
		t.Skipf("no Secret Service: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func names(ps []Process) []string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name)
	}
	slices.Sort(n)
	return n
}

// TestNothingLeftBehind starts and closes a Service three times, using the
// keyring in between, and checks after each Close that no process it
// started, directly or not, is still running.
func TestNothingLeftBehind(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("processes are found by their environment on Linux only")
	}
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	for round := range 3 {
		svc := start(t)
		if err := keyring.Set("tokenkeep-test", "alice", "secret"); err != nil {
			t.Fatalf("round %d: write after Start: %v", round, err)
		}
		if got, err := keyring.Get("tokenkeep-test", "alice"); err != nil || got != "secret" {
			t.Fatalf("round %d: read after Start: %q, %v", round, got, err)
		}
		running := Survivors(svc.Marker())
		if got, want := names(running), []string{"dbus-daemon", "gnome-keyring-d"}; !slices.Equal(got, want) {
			t.Errorf("round %d: running %v, want one of each of %v", round, running, want)
		}
		if err := svc.Close(); err != nil {
			t.Errorf("round %d: Close: %v", round, err)
		}
		if left := Survivors(svc.Marker()); len(left) != 0 {
			t.Fatalf("round %d: left running after Close: %v", round, left)
		}
		for _, p := range running {
			if err := syscall.Kill(p.Pid, 0); !errors.Is(err, syscall.ESRCH) && !zombiePid(p.Pid) {
				t.Errorf("round %d: %v still there after Close: %v", round, p, err)
			}
		}
	}
}

func zombiePid(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && zombie(stat)
}

// TestNoActivation checks that the bus cannot start a second daemon: D-Bus
// activation, which started one under load when a call came before the
// daemon had claimed its name, is off.
func TestNoActivation(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	svc := start(t)
	defer svc.Stop()
	for _, name := range []string{"org.freedesktop.secrets", "org.gnome.keyring"} {
		_, err := svc.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
			"org.freedesktop.DBus.StartServiceByName", "string:"+name, "uint32:0")
		if err == nil || !strings.Contains(err.Error(), "ServiceUnknown") {
			t.Errorf("StartServiceByName(%s): %v, want ServiceUnknown", name, err)
		}
	}
}

// TestCloseKillsStragglers starts a process with the Service's marker that
// leaves its process group, as a daemon that forks into the background
// does: Close must find it, kill it and say so.
func TestCloseKillsStragglers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("processes are found by their environment on Linux only")
	}
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	svc := start(t)
	straggler := exec.Command("sleep", "600")
	straggler.Env = []string{MarkerEnv + "=" + svc.Marker()}
	straggler.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := straggler.Start(); err != nil {
		svc.Stop()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- straggler.Wait() }()
	err := svc.Close()
	if err == nil || !strings.Contains(err.Error(), "left behind") {
		t.Errorf("Close: %v, want it to report the process left behind", err)
	}
	if werr := <-done; werr == nil {
		t.Errorf("the straggler exited normally; want it killed")
	}
	if left := Survivors(svc.Marker()); len(left) != 0 {
		t.Errorf("left running after Close: %v", left)
	}
}
