package storage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"
)

// pairToken is the i-th token of a save loop: its access and refresh tokens
// carry the same number, so a torn or mixed write is visible.
func pairToken(i int) *oauth2.Token {
	return &oauth2.Token{
		AccessToken:  fmt.Sprintf("tkat_%d", i),
		RefreshToken: fmt.Sprintf("tkrt_%d", i),
		TokenType:    "Bearer",
		Expiry:       time.Unix(int64(1e9+i), 0),
	}
}

func helperSaveLoop(dir string) error {
	f, err := NewFile(dir, mustRaw(nopTB{}, testKey()))
	if err != nil {
		return err
	}
	for i := 1; ; i++ {
		if err := SaveToken(context.Background(), f, "e", pairToken(i)); err != nil {
			return err
		}
		if i == 1 {
			fmt.Println("saving")
		}
	}
}

// TestFileCrashSafety kills a process that saves in a loop at random
// moments; after every kill the entry must hold one complete token.
func TestFileCrashSafety(t *testing.T) {
	const kills = 200
	dir := t.TempDir()
	f, err := NewFile(dir, mustRaw(t, testKey()))
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveToken(bg, f, "e", pairToken(0)); err != nil {
		t.Fatal(err)
	}
	progressed := 0
	last := "tkat_0"
	for i := range kills {
		cmd := helper(t, "saveloop", "STORE_DIR="+dir)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(out).ReadString('\n'); line != "saving\n" {
			t.Fatalf("helper said %q", line)
		}
		// Kill at a random moment of the save loop. This sleep picks when
		// a real process dies; nothing waits on it or measures it.
		time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		got, err := LoadToken(bg, f, "e")
		if err != nil {
			t.Fatalf("kill %d: entry unreadable: %v", i, err)
		}
		at, rt := strings.TrimPrefix(got.AccessToken, "tkat_"), strings.TrimPrefix(got.RefreshToken, "tkrt_")
		if at != rt {
			t.Fatalf("kill %d: access token %s paired with refresh token %s", i, at, rt)
		}
		if got.AccessToken != last {
			progressed++
			last = got.AccessToken
		}
	}
	// Crashed writers leave at most one temporary file, which the next save
	// replaces.
	temps := entryTempsAny(dir, "e")
	if len(temps) > 1 {
		t.Errorf("%d temporary files after the kills, want at most 1", len(temps))
	}
	if err := SaveToken(bg, f, "e", pairToken(kills+1)); err != nil {
		t.Fatal(err)
	}
	if left := entryTempsAny(dir, "e"); len(left) != 0 {
		t.Errorf("%d temporary files left after a save, want 0", len(left))
	}
	t.Logf("%d processes killed while saving (%d of them after changing the entry); the entry decoded to a complete token every time; %d temporary file left by the killed writers was replaced by the next save", kills, progressed, len(temps))
}

func helperHoldLock(dir string) error {
	f, err := NewFile(dir, mustRaw(nopTB{}, testKey()))
	if err != nil {
		return err
	}
	if _, err := f.Lock(context.Background(), "e"); err != nil {
		return err
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin) // hold until killed
	return nil
}

// TestFileLockAcrossProcesses holds an entry's lock in another process,
// checks that it excludes this one, then SIGKILLs the holder and checks
// that the lock is free at once.
func TestFileLockAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	cmd := helper(t, "holdlock", "STORE_DIR="+dir)
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("helper said %q", line)
	}
	f, _ := NewFile(dir, mustRaw(t, testKey()))
	ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
	_, err := f.Lock(ctx, "e")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock held elsewhere: got %v, want DeadlineExceeded", err)
	}
	// Another entry is not blocked.
	unlock, err := f.Lock(bg, "other")
	if err != nil {
		t.Fatal(err)
	}
	unlock()

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	start := time.Now()
	ctx, cancel = context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	unlock, err = f.Lock(ctx, "e")
	if err != nil {
		t.Fatalf("lock of a killed holder: %v", err)
	}
	unlock()
	t.Logf("lock taken %v after its holder was killed", time.Since(start))
	if _, err := os.Stat(f.Path("e") + ".lock"); err != nil {
		t.Fatalf("lock file: %v", err)
	}
}

func TestFileLockInProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		testLockExcludes(t, newFileStore(t, mustRaw(t, testKey())))
	})
}

func helperReadOnly(dir string) error {
	f, err := NewFile(dir, mustRaw(nopTB{}, testKey()))
	if err != nil {
		return err
	}
	if err := SaveToken(bg, f, "e", pairToken(1)); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		return err
	}
	defer os.Chmod(dir, 0o700)
	if err := SaveToken(bg, f, "e", pairToken(2)); err == nil {
		return errors.New("Save into a read-only directory succeeded")
	}
	got, err := LoadToken(bg, f, "e")
	if err != nil {
		return err
	}
	if got.AccessToken != "tkat_1" {
		return errors.New("the failed save changed the entry")
	}
	return nil
}

// TestFileReadOnlyDirectory saves into a directory that cannot be written:
// a clear error, and the old entry intact. Root ignores mode bits, so as
// root the check runs in a process with the uid of nobody.
func TestFileReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		if err := helperReadOnly(filepath.Join(t.TempDir(), "s")); err != nil {
			t.Fatal(err)
		}
		return
	}
	const nobody = 65534
	top, err := os.MkdirTemp("", "tokenkeep-ro-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(top)
	os.Chmod(top, 0o755)
	bin := filepath.Join(top, "storage.test")
	exe, _ := os.ReadFile(os.Args[0])
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(top, "s")
	os.Mkdir(dir, 0o700)
	os.Chown(dir, nobody, nobody)
	cmd := helper(t, "readonly", "STORE_DIR="+dir, "HOME="+dir)
	cmd.Path, cmd.Args[0], cmd.Stderr = bin, bin, nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}

// nopTB lets helpers use test utilities outside a test.
type nopTB struct{ testing.TB }

func (nopTB) Helper()           {}
func (nopTB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// entryTempsAny lists the temporary files of an entry, whatever their naming.
func entryTempsAny(dir, key string) []string {
	names, _ := filepath.Glob(filepath.Join(dir, "."+fileName(key)+".tmp*"))
	return names
}
