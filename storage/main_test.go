package storage

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/secretservice"
)

// helperEnv names the helper a re-executed test binary runs instead of the
// tests: crash and lock tests need real processes.
const helperEnv = "TOKENKEEP_STORAGE_HELPER"

// secretService is why the real Secret Service is missing, or "".
// secretServiceErr is why the private Secret Service did not start, if it
// did not; secretServiceMissing says whether that is because its programs
// are not installed (tests skip) rather than a failure (tests fail).
var (
	secretServiceErr     error
	secretServiceMissing bool
)

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		// Fuzzing needs no keyring, and its workers each run TestMain.
		os.Exit(m.Run())
	}
	stop, err := startSecretService()
	if err != nil {
		secretServiceErr = err
		secretServiceMissing = errors.Is(err, secretservice.ErrMissing)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startSecretService starts a private Secret Service and points this
// process, and only it, at its bus.
func startSecretService() (stop func(), err error) {
	svc, err := secretservice.Start(func(addr string) error {
		os.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
		_, err := callBackend(context.Background(), 2*time.Second, func() (string, error) {
			return osKeyring{}.Get("tokenkeep-probe", "probe")
		})
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return func() {}, err
	}
	return svc.Stop, nil
}

// needSecretService skips t when the real Secret Service could not be
// started, naming what is missing.
func needSecretService(t testing.TB) {
	t.Helper()
	switch {
	case secretServiceMissing:
		t.Skipf("no Secret Service: %v", secretServiceErr)
	case secretServiceErr != nil:
		t.Fatalf("the private Secret Service did not start: %v", secretServiceErr)
	}
}

// helper runs the test binary again as a helper process.
func helper(t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	return helperContext(context.Background(), t, name, env...)
}

// helperContext is helper with a context: the helper is killed when ctx
// is done.
func helperContext(ctx context.Context, t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
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
	case "ledgerwriter":
		err = helperLedgerWriter(os.Getenv("STORE_DIR"))
	case "lockdelete":
		err = helperLockDelete(os.Getenv("STORE_DIR"))
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
