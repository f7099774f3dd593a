package certprovider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// installCommand is what a person runs, from the module root, to install
// the provider's packages.
const installCommand = "npm ci --prefix testdata/oidc-provider"

var (
	installOnce sync.Once
	installErr  error
)

// ensureInstalled makes sure node_modules in dir holds exactly what the
// lockfile pins, running npm ci once per test binary if it does not.
func ensureInstalled(dir string) error {
	installOnce.Do(func() { installErr = install(dir) })
	return installErr
}

func install(dir string) error {
	why := installed(dir)
	if why == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("the provider's npm packages are not installed (%v), and npm is not on PATH to install them: run `%s`", why, installCommand)
	}
	// Test binaries of several packages may get here at once; one installs.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sum := sha256.Sum256([]byte(dir))
	lock := flock.New(filepath.Join(os.TempDir(), "tokenkeep-npm-ci-"+hex.EncodeToString(sum[:8])+".lock"))
	if ok, err := lock.TryLockContext(ctx, 250*time.Millisecond); !ok || err != nil {
		return fmt.Errorf("waiting for another npm ci: %v; run `%s`", err, installCommand)
	}
	defer lock.Unlock()
	if installed(dir) == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("the provider's npm packages are not installed (%v), and npm ci failed (%v): run `%s`; its output:\n%s", why, err, installCommand, out)
	}
	if err := installed(dir); err != nil {
		return fmt.Errorf("after npm ci: %v; run `%s`", err, installCommand)
	}
	return nil
}

// lockfile is the part of package-lock.json (and of the copy npm keeps in
// node_modules/.package-lock.json) that pins versions.
type lockfile struct {
	Packages map[string]struct {
		Version string `json:"version"`
	} `json:"packages"`
}

// installed reports why node_modules in dir does not hold what the
// lockfile pins, or nil.
func installed(dir string) error {
	var want, got lockfile
	if err := readJSON(filepath.Join(dir, "package-lock.json"), &want); err != nil {
		return err
	}
	if err := readJSON(filepath.Join(dir, "node_modules", ".package-lock.json"), &got); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("node_modules is missing")
		}
		return err
	}
	for name, p := range want.Packages {
		if name == "" {
			continue // the project itself
		}
		if g, ok := got.Packages[name]; !ok || g.Version != p.Version {
			return fmt.Errorf("node_modules has %s %q, the lockfile pins %q", name, g.Version, p.Version)
		}
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
