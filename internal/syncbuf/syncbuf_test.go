package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWriteAndRead writes from several goroutines while reading;
// run with -race, it fails if Buffer is not safe for that.
func TestConcurrentWriteAndRead(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("x", 400) {
		t.Fatalf("got %d bytes, want 400", len(got))
	}
}

// TestChanged: the channel Changed returns is open until the next Write
// closes it; the next call returns a new one, open again.
func TestChanged(t *testing.T) {
	var b Buffer
	first := b.Changed()
	if again := b.Changed(); again != first {
		t.Errorf("Changed before any Write returned a second channel")
	}
	if isClosed(first) {
		t.Fatal("closed before any Write")
	}
	b.Write([]byte("x"))
	if !isClosed(first) {
		t.Fatal("open after a Write")
	}
	second := b.Changed()
	if isClosed(second) {
		t.Fatal("the channel asked for after a Write is closed before the next")
	}
	b.Write(nil)
	if !isClosed(second) {
		t.Fatal("open after the second Write")
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
