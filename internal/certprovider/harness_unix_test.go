//go:build unix

package certprovider_test

import (
	"errors"
	"syscall"
	"testing"

	"github.com/tokenkeep/tokenkeep/internal/certprovider"
)

// TestNothingLeftRunning checks that a provider ends with the test that
// started it: once the subtest's cleanup has run, neither the process nor
// any of its group is left.
func TestNothingLeftRunning(t *testing.T) {
	t.Parallel()
	var pid int
	t.Run("provider", func(t *testing.T) {
		p := certprovider.Start(t)
		pid = p.Pid()
		if _, err := p.Stats(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	if pid == 0 {
		t.Skip("no provider started")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the provider's process %d is still there after its test: %v", pid, err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("a process of the provider's group %d is still there after its test: %v", pid, err)
	}
}
