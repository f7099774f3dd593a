package authserver

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

var userCodePattern = regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`)

// startDevice starts a device authorization for the public client and
// returns its device and user codes.
func startDevice(t *testing.T, srv *Server, auth clientAuth) (deviceCode, userCode string) {
	t.Helper()
	r := post(t, srv, EndpointDevice, url.Values{"scope": {"read write"}}, auth)
	if r.status != http.StatusOK {
		t.Fatalf("device authorization: %d %s", r.status, r.body)
	}
	m := r.json(t)
	deviceCode, _ = m["device_code"].(string)
	userCode, _ = m["user_code"].(string)
	if !strings.HasPrefix(deviceCode, "tkdev_") || !userCodePattern.MatchString(userCode) {
		t.Fatalf("device answer %s", r.body)
	}
	return deviceCode, userCode
}

func pollDevice(t *testing.T, srv *Server, dc string, auth clientAuth) reply {
	t.Helper()
	return post(t, srv, EndpointToken, url.Values{"grant_type": {deviceGrantType}, "device_code": {dc}}, auth)
}

func wantPoll(t *testing.T, r reply, code string) {
	t.Helper()
	if code == "" {
		if r.status != http.StatusOK {
			t.Fatalf("poll: got %d %s, want a token", r.status, r.body)
		}
		return
	}
	if r.status != http.StatusBadRequest || r.errorCode() != code {
		t.Fatalf("poll: got %d %s, want 400 %s", r.status, r.body, code)
	}
}

func TestDeviceAuthorizationAnswer(t *testing.T) {
	srv := newServer(t, Config{DeviceInterval: 3 * time.Second, DeviceTTL: 2 * time.Minute})
	da, err := srv.PublicConfig("read").DeviceAuth(clientCtx(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(da.DeviceCode, "tkdev_") || !userCodePattern.MatchString(da.UserCode) {
		t.Errorf("codes %q, %q", da.DeviceCode, da.UserCode)
	}
	if da.VerificationURI != srv.URL()+"/device" {
		t.Errorf("verification_uri %q", da.VerificationURI)
	}
	u, err := url.Parse(da.VerificationURIComplete)
	if err != nil || u.Query().Get("user_code") != da.UserCode {
		t.Errorf("verification_uri_complete %q", da.VerificationURIComplete)
	}
	if da.Interval != 3 {
		t.Errorf("interval %d, want 3", da.Interval)
	}
	if left := time.Until(da.Expiry); left < 110*time.Second || left > 2*time.Minute {
		t.Errorf("expires in %v, want 2m", left)
	}

	// Sub-second intervals are announced as one second, never zero.
	srv2 := newServer(t, Config{DeviceInterval: time.Millisecond})
	r := post(t, srv2, EndpointDevice, nil, public)
	if got := r.json(t)["interval"]; got != float64(1) {
		t.Errorf("interval %v, want 1", got)
	}
	// Defaults: 5 s and 10 min.
	srv3 := newServer(t, Config{})
	m := post(t, srv3, EndpointDevice, nil, public).json(t)
	if m["interval"] != float64(5) || m["expires_in"] != float64(600) {
		t.Errorf("defaults: %v", m)
	}
	// GET is refused; so is an unauthenticated client.
	if r := get(t, srv3.Client(), srv3.URL()+EndpointDevice, ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", r.status)
	}
	if r := post(t, srv3, EndpointDevice, nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("no client: %d", r.status)
	}
}

// The whole flow through x/oauth2, on the server's real clock.
func TestDeviceFlowOAuth2(t *testing.T) {
	for _, tc := range []struct {
		name    string
		decide  func(srv *Server, userCode string) error
		wantErr string
	}{
		{"approved", (*Server).ApproveDevice, ""},
		{"denied", (*Server).DenyDevice, "access_denied"},
		{"approved after pending", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// A tiny server-side interval: x/oauth2 polls every second and
			// must never be told to slow down. In the bubble its seconds
			// pass at once.
			inBubble(t, Config{DeviceInterval: time.Millisecond}, func(t *testing.T, srv *Server) {
				ctx, cfg := clientCtx(t, srv), srv.PublicConfig("read")
				ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				da, err := cfg.DeviceAuth(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if tc.decide != nil {
					if err := tc.decide(srv, da.UserCode); err != nil {
						t.Fatal(err)
					}
				} else {
					go func() {
						for srv.Stats().DeviceGrants < 1 && ctx.Err() == nil {
							time.Sleep(10 * time.Millisecond)
						}
						srv.ApproveDevice(da.UserCode)
					}()
				}
				tok, err := cfg.DeviceAccessToken(ctx, da)
				if tc.wantErr != "" {
					wantRetrieveErr(t, err, tc.wantErr, http.StatusBadRequest)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				checkTokenShape(t, tok, true)
				if tok.Extra("scope") != "read" {
					t.Errorf("scope %v", tok.Extra("scope"))
				}
				if !srv.RefreshTokenActive(tok.RefreshToken) || !srv.AccessTokenActive(tok.AccessToken) {
					t.Error("device tokens not active")
				}
				if _, err := refresh(ctx, cfg, tok.RefreshToken); err != nil {
					t.Errorf("refreshing the device token as the public client: %v", err)
				}
				want := int64(1)
				if tc.decide == nil {
					want = 2
				}
				if st := srv.Stats(); st.DeviceGrants != want {
					t.Errorf("DeviceGrants %d, want %d", st.DeviceGrants, want)
				}
			})
		})
	}
}

func TestDevicePolling(t *testing.T) {
	const interval, step = 5 * time.Second, 7 * time.Second

	t.Run("pending, slow_down, approval", func(t *testing.T) {
		clock := newFakeClock()
		srv := newServer(t, Config{Now: clock.Now, DeviceInterval: interval, DeviceSlowDownStep: step})
		dc, uc := startDevice(t, srv, public)

		wantPoll(t, pollDevice(t, srv, dc, public), "authorization_pending")
		clock.Advance(time.Second)
		wantPoll(t, pollDevice(t, srv, dc, public), "slow_down") // interval now 12s
		clock.Advance(interval + step - time.Second)
		// 11s after the last poll: too fast for 12s, though not for the
		// 5s a client would add by the RFC default.
		wantPoll(t, pollDevice(t, srv, dc, public), "slow_down") // interval now 19s
		clock.Advance(interval + 2*step)
		wantPoll(t, pollDevice(t, srv, dc, public), "authorization_pending")

		if err := srv.ApproveDevice(uc); err != nil {
			t.Fatal(err)
		}
		// Approval does not excuse polling too fast.
		wantPoll(t, pollDevice(t, srv, dc, public), "slow_down")
		clock.Advance(interval + 3*step)
		r := pollDevice(t, srv, dc, public)
		wantPoll(t, r, "")
		m := r.json(t)
		at, _ := m["access_token"].(string)
		rt, _ := m["refresh_token"].(string)
		if !strings.HasPrefix(at, "tkat_") || !strings.HasPrefix(rt, "tkrt_") || m["scope"] != "read write" {
			t.Fatalf("token answer %s", r.body)
		}
		// The device code is spent, and so is the user code.
		clock.Advance(time.Hour)
		wantPoll(t, pollDevice(t, srv, dc, public), "invalid_grant")
		if err := srv.ApproveDevice(uc); err == nil {
			t.Error("ApproveDevice of a spent user code succeeded")
		}
		if st := srv.Stats(); st.DeviceGrants != 7 {
			t.Errorf("DeviceGrants %d, want 7", st.DeviceGrants)
		}
	})

	t.Run("default slow_down step is 5s", func(t *testing.T) {
		clock := newFakeClock()
		srv := newServer(t, Config{Now: clock.Now, DeviceInterval: interval})
		dc, _ := startDevice(t, srv, public)
		wantPoll(t, pollDevice(t, srv, dc, public), "authorization_pending")
		wantPoll(t, pollDevice(t, srv, dc, public), "slow_down") // 10s
		clock.Advance(10*time.Second - time.Nanosecond)
		wantPoll(t, pollDevice(t, srv, dc, public), "slow_down") // 15s
		clock.Advance(15 * time.Second)
		wantPoll(t, pollDevice(t, srv, dc, public), "authorization_pending")
	})

	t.Run("polling at the interval is never slowed", func(t *testing.T) {
		clock := newFakeClock()
		srv := newServer(t, Config{Now: clock.Now, DeviceInterval: interval, DeviceSlowDownStep: step})
		dc, _ := startDevice(t, srv, public)
		for range 5 {
			wantPoll(t, pollDevice(t, srv, dc, public), "authorization_pending")
			clock.Advance(interval)
		}
	})

	t.Run("denied", func(t *testing.T) {
		clock := newFakeClock()
		srv := newServer(t, Config{Now: clock.Now, DeviceInterval: interval})
		dc, uc := startDevice(t, srv, public)
		wantPoll(t, pollDevice(t, srv, dc, public), "authorization_pending")
		if err := srv.DenyDevice(uc); err != nil {
			t.Fatal(err)
		}
		clock.Advance(interval)
		wantPoll(t, pollDevice(t, srv, dc, public), "access_denied")
		clock.Advance(interval)
		wantPoll(t, pollDevice(t, srv, dc, public), "invalid_grant")
		if err := srv.ApproveDevice(uc); err == nil {
			t.Error("ApproveDevice of a denied and answered user code succeeded")
		}
		if n := len(srv.users); n != 0 {
			t.Errorf("%d user codes still held after the denial was answered", n)
		}
	})

	t.Run("expired", func(t *testing.T) {
		for _, approve := range []bool{false, true} {
			clock := newFakeClock()
			srv := newServer(t, Config{Now: clock.Now, DeviceTTL: time.Minute})
			dc, uc := startDevice(t, srv, public)
			if approve {
				if err := srv.ApproveDevice(uc); err != nil {
					t.Fatal(err)
				}
			}
			clock.Advance(time.Minute)
			if err := srv.ApproveDevice(uc); err == nil {
				t.Error("ApproveDevice of an expired user code succeeded")
			}
			wantPoll(t, pollDevice(t, srv, dc, public), "expired_token")
			if n := len(srv.users); n != 0 {
				t.Errorf("%d user codes still held after expiry was answered", n)
			}
		}
	})

	t.Run("confidential client", func(t *testing.T) {
		srv := newServer(t, Config{})
		dc, uc := startDevice(t, srv, confidential)
		if err := srv.ApproveDevice(uc); err != nil {
			t.Fatal(err)
		}
		// Another client cannot redeem it.
		wantPoll(t, pollDevice(t, srv, dc, public), "invalid_grant")
		wantPoll(t, pollDevice(t, srv, dc, confidential), "")
	})

	t.Run("unknown user code", func(t *testing.T) {
		srv := newServer(t, Config{})
		if err := srv.ApproveDevice("BCDF-GHJK"); err == nil {
			t.Error("ApproveDevice of an unknown code succeeded")
		}
		if err := srv.DenyDevice(""); err == nil {
			t.Error("DenyDevice of an empty code succeeded")
		}
	})
}

func TestDeviceCodesAreDistinct(t *testing.T) {
	srv := newServer(t, Config{})
	cfg := srv.PublicConfig()
	seen := map[string]bool{}
	for range 20 {
		da, err := cfg.DeviceAuth(clientCtx(t, srv), oauth2.AccessTypeOffline)
		if err != nil {
			t.Fatal(err)
		}
		if seen[da.DeviceCode] || seen[da.UserCode] {
			t.Fatalf("code issued twice: %+v", da)
		}
		seen[da.DeviceCode], seen[da.UserCode] = true, true
	}
}
