package storage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// helperEnv names the helper a re-executed test binary runs instead of the
// tests: crash and lock tests need real processes.
const helperEnv = "TOKENKEEP_STORAGE_HELPER"

// secretService is why the real Secret Service is missing, or "".
var secretServiceMissing string

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	stop, err := startSecretService()
	if err != nil {
		secretServiceMissing = err.Error()
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startSecretService starts a private D-Bus session bus and a
// gnome-keyring-daemon on it, with their own home and XDG directories, and
// points this process, and only it, at that bus.
func startSecretService() (stop func(), err error) {
	stop = func() {}
	for _, prog := range []string{"dbus-daemon", "gnome-keyring-daemon"} {
		if _, err := exec.LookPath(prog); err != nil {
			return stop, fmt.Errorf("%s not installed (Debian packages dbus and gnome-keyring)", prog)
		}
	}
	dir, err := os.MkdirTemp("", "tokenkeep-secret-service-")
	if err != nil {
		return stop, err
	}
	var procs []*exec.Cmd
	stop = func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
		os.RemoveAll(dir)
	}
	env := []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	for _, v := range []string{"XDG_RUNTIME_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"} {
		d := filepath.Join(dir, strings.ToLower(v))
		os.MkdirAll(d, 0o700)
		env = append(env, v+"="+d)
	}

	bus := exec.Command("dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1",
		"--address=unix:path="+filepath.Join(dir, "bus"))
	bus.Env = env
	out, err := bus.StdoutPipe()
	if err != nil {
		return stop, err
	}
	if err := bus.Start(); err != nil {
		return stop, fmt.Errorf("start dbus-daemon: %w", err)
	}
	procs = append(procs, bus)
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addrc <- strings.TrimSpace(line)
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(10 * time.Second):
		return stop, errors.New("dbus-daemon printed no address")
	}
	env = append(env, "DBUS_SESSION_BUS_ADDRESS="+addr)

	kd := exec.Command("gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets")
	kd.Env = env
	kd.Stdin = strings.NewReader("tokenkeep-test-keyring-password")
	if err := kd.Start(); err != nil {
		return stop, fmt.Errorf("start gnome-keyring-daemon: %w", err)
	}
	procs = append(procs, kd)

	os.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
	// Wait for the daemon to own org.freedesktop.secrets.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := callBackend(context.Background(), 2*time.Second, func() (string, error) {
			return osKeyring{}.Get("tokenkeep-probe", "probe")
		})
		if err == nil || errors.Is(err, ErrNotFound) {
			return stop, nil
		}
		if time.Now().After(deadline) {
			return stop, fmt.Errorf("gnome-keyring-daemon did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// needSecretService skips t when the real Secret Service could not be
// started, naming what is missing.
func needSecretService(t testing.TB) {
	t.Helper()
	if secretServiceMissing != "" {
		t.Skipf("no Secret Service: %s", secretServiceMissing)
	}
}

// helper runs the test binary again as a helper process.
func helper(t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, helperEnv+"="+name)...)
	cmd.Stderr = os.Stderr
	return cmd
}

func runHelper(name string) int {
	var err error
	switch name {
	case "saveloop":
		err = helperSaveLoop(os.Getenv("STORE_DIR"))
	case "holdlock":
		err = helperHoldLock(os.Getenv("STORE_DIR"))
	case "nobus":
		err = helperNoBus()
	case "readonly":
		err = helperReadOnly(os.Getenv("STORE_DIR"))
	default:
		err = fmt.Errorf("unknown helper %q", name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}
