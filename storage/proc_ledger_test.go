package storage

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// procRounds is how many writes each helper process attempts.
const procRounds = 40

// helperLedgerWriter waits for its standard input to close, then reads and
// writes the next generation procRounds times, printing each generation it
// won and "conflict" for each write refused.
func helperLedgerWriter(dir string) error {
	var f Store
	var err error
	if os.Getenv("STORE_KIND") == "keyring" {
		f, err = NewKeyring("tokenkeep-test", &KeyringOptions{LockDir: dir})
	} else {
		f, err = NewFile(dir, mustRaw(nopTB{}, testKey()))
	}
	if err != nil {
		return err
	}
	io.Copy(io.Discard, os.Stdin)
	var seen uint64
	for range procRounds {
		var gen uint64
		r, err := f.Load(bg, os.Getenv("STORE_ENTRY"))
		switch {
		case err == nil:
			gen = r.Generation
		case errors.Is(err, ErrNotFound):
		default:
			return err
		}
		if gen < seen {
			return fmt.Errorf("read generation %d after %d", gen, seen)
		}
		seen = gen
		err = f.Save(bg, os.Getenv("STORE_ENTRY"), NewRecord(gen, sessionToken(int(gen)+1)))
		switch {
		case err == nil:
			fmt.Println(gen + 1)
		case errors.Is(err, ErrConflict):
			fmt.Println("conflict")
		default:
			return err
		}
	}
	return nil
}

// startTogether starts n helpers and releases them at once by closing
// their standard input; it returns their outputs once all have exited.
func startTogether(t *testing.T, n int, name string, env ...string) []string {
	t.Helper()
	var cmds []*exec.Cmd
	var stdins []io.Closer
	outs := make([]strings.Builder, n)
	for i := range n {
		cmd := helper(t, name, env...)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout = &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, stdins = append(cmds, cmd), append(stdins, in)
	}
	for _, in := range stdins {
		in.Close()
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v\n%s", i, err, outs[i].String())
		}
	}
	res := make([]string, n)
	for i := range outs {
		res[i] = outs[i].String()
	}
	return res
}

// TestLedgerAcrossProcesses races processes that each read the entry and
// write the next generation, through a file store or the real Secret
// Service: every generation is won by exactly one process, and what each
// process reads only grows.
func TestLedgerAcrossProcesses(t *testing.T) {
	const procs = 4
	for _, kind := range []string{"file", "keyring"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			entry := "e"
			var s Store
			if kind == "keyring" {
				needSecretService(t)
				entry = t.Name()
				k, err := NewKeyring("tokenkeep-test", &KeyringOptions{LockDir: dir})
				if err != nil {
					t.Fatal(err)
				}
				k.Delete(bg, entry)
				t.Cleanup(func() { k.Delete(bg, entry) })
				s = k
			} else {
				f, err := NewFile(dir, mustRaw(t, testKey()))
				if err != nil {
					t.Fatal(err)
				}
				s = f
			}
			outs := startTogether(t, procs, "ledgerwriter", "STORE_DIR="+dir, "STORE_KIND="+kind, "STORE_ENTRY="+entry)
			won := map[uint64]int{}
			conflicts := 0
			for p, out := range outs {
				sc := bufio.NewScanner(strings.NewReader(out))
				for sc.Scan() {
					if sc.Text() == "conflict" {
						conflicts++
						continue
					}
					g, err := strconv.ParseUint(sc.Text(), 10, 64)
					if err != nil {
						t.Fatalf("helper %d printed %q", p, sc.Text())
					}
					if prev, ok := won[g]; ok {
						t.Fatalf("generation %d written by processes %d and %d", g, prev, p)
					}
					won[g] = p
				}
			}
			if got := conflicts + len(won); got != procs*procRounds {
				t.Fatalf("%d outcomes, want %d", got, procs*procRounds)
			}
			final := mustLoad(t, s, entry, uint64(len(won)))
			if final.Token.AccessToken != sessionToken(len(won)).AccessToken {
				t.Fatal("the final record is not the last generation's")
			}
			for g := range uint64(len(won)) {
				if _, ok := won[g+1]; !ok {
					t.Fatalf("generation %d never written, yet %d were", g+1, len(won))
				}
			}
			t.Logf("%d processes × %d writes: %d generations, each written once; %d stale writes refused", procs, procRounds, len(won), conflicts)
		})
	}
}

// helperLockDelete takes the entry's lock procRounds times; inside, it
// creates a marker file that must not exist (another holder would have
// made it), and deletes or writes the entry, so that lock files are
// removed and created all the time.
func helperLockDelete(dir string) error {
	f, err := NewFile(dir, mustRaw(nopTB{}, testKey()))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, os.Stdin)
	marker := filepath.Join(dir, "inside")
	for i := range procRounds {
		unlock, err := f.Lock(bg, "e")
		if err != nil {
			return err
		}
		m, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			unlock()
			return fmt.Errorf("two holders at once: %v", err)
		}
		m.Close()
		if i%2 == 0 {
			err = f.Delete(bg, "e")
		} else {
			err = SaveToken(bg, f, "e", sampleToken())
		}
		os.Remove(marker)
		unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// TestFileLockAcrossProcessesWhileLockFilesAreRemoved: processes take an
// entry's lock and delete the entry (its lock file goes too) or write it,
// over and over; never two hold the lock at once.
func TestFileLockAcrossProcessesWhileLockFilesAreRemoved(t *testing.T) {
	const procs = 4
	dir := filepath.Join(t.TempDir(), "s")
	if _, err := NewFile(dir, mustRaw(t, testKey())); err != nil {
		t.Fatal(err)
	}
	startTogether(t, procs, "lockdelete", "STORE_DIR="+dir)
	t.Logf("%d processes × %d lock holds, half of them removing the lock file: never two at once", procs, procRounds)
}
