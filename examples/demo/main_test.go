package main

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestDemo runs the whole demo, with the settings a user gets, in a
// testing/synctest bubble, and checks what it claims. The provider is in
// memory and the demo's pauses, the tokens' lifetimes and the backoff pass
// on the bubble's clock, so the claims are checked exactly and at once,
// however busy the machine.
func TestDemo(t *testing.T) {
	var out strings.Builder
	synctest.Test(t, func(t *testing.T) {
		if err := run(context.Background(), &out, settings{slow: 1, ttl: 3 * time.Second, inMemory: true}); err != nil {
			t.Fatalf("demo failed: %v\n%s", err, out.String())
		}
	})
	if t.Failed() {
		return
	}
	got := out.String()
	for _, secret := range []string{"tkat_", "tkrt_"} {
		if strings.Contains(got, secret) {
			t.Errorf("output shows a token:\n%s", got)
		}
	}
	steps := strings.Split(got, "\n\n")
	if len(steps) != 6 {
		t.Fatalf("got %d steps, want 6:\n%s", len(steps), got)
	}
	for _, c := range []struct {
		name  string
		step  int            // 1 to 6
		count map[string]int // how often each string appears in the step
	}{
		{name: "login", step: 1, count: map[string]int{"Logged in": 1}},
		{
			// A call every half second for 7.5 s; the 3 s tokens are
			// replaced three times, each in the background.
			name: "steady calls",
			step: 2,
			count: map[string]int{
				"200 OK":                         15,
				"background refresh (1 request)": 3,
				"· refresh":                      0,
				"No call waited for a refresh":   1,
			},
		},
		{name: "restart", step: 3, count: map[string]int{"logins: 0, refreshes: 0. No login needed.": 1}},
		{
			name: "storm",
			step: 4,
			count: map[string]int{
				"· refresh (1 request)":                                   1,
				"100 of 100 calls succeeded; token endpoint requests: 1.": 1,
			},
		},
		{
			name:  "outage",
			step:  5,
			count: map[string]int{"· refresh (4 requests)": 1, "after backoff: 200 OK": 1},
		},
		{
			// The first calls get 401 within the recovery interval that the
			// 401 of step 5 started: one or two, as step 5's backoff is
			// random. The next causes one refresh, which the provider
			// refuses, and the error says why.
			name: "revoked",
			step: 6,
			count: map[string]int{
				"· refresh failed after 1 request":         1,
				"fails with tokensource.ErrReauthRequired": 1,
				`"invalid_grant"`:                          1,
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			step := steps[c.step-1]
			for s, want := range c.count {
				if got := strings.Count(step, s); got != want {
					t.Errorf("%q appears %d times, want %d:\n%s", s, got, want, step)
				}
			}
		})
	}
}
