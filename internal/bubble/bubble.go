// Package bubble counts the goroutines of a testing/synctest bubble.
//
// runtime.NumGoroutine counts the whole process, where goroutines of
// earlier tests may still be starting or ending; a test that checks how
// many goroutines its own code runs counts its bubble's instead.
package bubble

import (
	"bytes"
	"regexp"
	"runtime"
)

// member finds the bubble in a goroutine's header in a stack dump:
// "goroutine 7 [chan receive (durable), synctest bubble 3]:".
var member = regexp.MustCompile(`^goroutine \d+ \[.*, synctest bubble (\d+)[\] ]`)

// Goroutines returns the number of goroutines in the caller's synctest
// bubble, the caller and those synctest itself runs included: tests compare
// two counts. It panics when the caller is in none.
func Goroutines() int {
	own := member.FindSubmatch(stack(false))
	if own == nil {
		panic("bubble: Goroutines called outside a synctest bubble")
	}
	n := 0
	for _, line := range bytes.Split(stack(true), []byte("\n")) {
		if m := member.FindSubmatch(line); m != nil && bytes.Equal(m[1], own[1]) {
			n++
		}
	}
	return n
}

// stack returns a stack dump of the caller's goroutine, or of all.
func stack(all bool) []byte {
	for size := 64 << 10; ; size *= 2 {
		buf := make([]byte, size)
		if n := runtime.Stack(buf, all); n < size {
			return buf[:n]
		}
	}
}
