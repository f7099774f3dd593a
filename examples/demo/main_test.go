package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the whole demo, faster, and checks what it claims.
func TestDemo(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), &out, settings{slow: 0.5, ttl: 2 * time.Second}); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"No call waited for a refresh",
		"logins: 0, refreshes: ",
		"No login needed.",
		"100 of 100 calls succeeded; token endpoint requests: 1.",
		"refresh (4 requests)",
		"tokensource.ErrReauthRequired",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, secret := range []string{"tkat_", "tkrt_"} {
		if strings.Contains(got, secret) {
			t.Errorf("output shows a token:\n%s", got)
		}
	}
}
