package bubble

import (
	"runtime"
	"testing"
	"testing/synctest"
)

// TestGoroutines: goroutines of the bubble are counted, whether running or
// blocked; those outside it, here started before it, are not.
func TestGoroutines(t *testing.T) {
	outside := make(chan struct{})
	defer close(outside)
	for range 5 {
		go func() { <-outside }()
	}
	synctest.Test(t, func(t *testing.T) {
		base := Goroutines()
		stop := make(chan struct{})
		for range 3 {
			go func() { <-stop }()
		}
		synctest.Wait()
		if got := Goroutines() - base; got != 3 {
			t.Errorf("three blocked goroutines counted as %d (process-wide: %d)", got, runtime.NumGoroutine()-base)
		}
		close(stop)
		synctest.Wait()
		if got := Goroutines() - base; got != 0 {
			t.Errorf("after they ended: %d more than at the start, want 0", got)
		}
	})
}
