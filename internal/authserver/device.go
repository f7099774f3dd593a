package authserver

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

type deviceGrant struct {
	client   string
	userCode string
	scopes   []string
	expiry   time.Time
	interval time.Duration
	lastPoll time.Time
	approved bool
	denied   bool
}

// deviceCode starts a device authorization (RFC 8628 section 3.2).
func (s *Server) deviceCode(w http.ResponseWriter, r *http.Request) {
	client, ok := s.postFromClient(w, r)
	if !ok {
		return
	}
	dc, uc := randomValue("tkdev_"), userCode()
	s.mu.Lock()
	s.devices[dc] = &deviceGrant{
		client: client, userCode: uc, scopes: strings.Fields(r.PostForm.Get("scope")),
		expiry: s.now().Add(s.cfg.DeviceTTL), interval: s.cfg.DeviceInterval,
	}
	s.users[uc] = dc
	s.mu.Unlock()
	verify := s.URL() + "/device"
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{
		"device_code":               dc,
		"user_code":                 uc,
		"verification_uri":          verify,
		"verification_uri_complete": verify + "?user_code=" + url.QueryEscape(uc),
		"expires_in":                wholeSeconds(s.cfg.DeviceTTL),
		"interval":                  max(int64(s.cfg.DeviceInterval/time.Second), 1),
	})
}

// userCode returns eight letters from an alphabet without look-alikes, as
// "WDJB-MJHT".
func userCode() string {
	const alphabet = "BCDFGHJKLMNPQRSTVWXZ"
	b := make([]byte, 8)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:4]) + "-" + string(b[4:])
}

// ApproveDevice approves the pending device authorization with userCode.
func (s *Server) ApproveDevice(userCode string) error {
	return s.decide(userCode, true)
}

// DenyDevice denies the pending device authorization with userCode.
func (s *Server) DenyDevice(userCode string) error {
	return s.decide(userCode, false)
}

func (s *Server) decide(userCode string, approve bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.devices[s.users[userCode]]
	if !ok || !s.now().Before(g.expiry) {
		return errors.New("authserver: no pending device authorization with that user code")
	}
	g.approved, g.denied = approve, !approve
	return nil
}

// deviceGrant answers a device's poll (RFC 8628 section 3.5).
func (s *Server) deviceGrant(client string, form url.Values) (map[string]any, *tokenError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dc := form.Get("device_code")
	g, ok := s.devices[dc]
	now := s.now()
	pending := func(code string) *tokenError { return &tokenError{http.StatusBadRequest, code, ""} }
	switch {
	case !ok || g.client != client:
		return nil, invalidGrant("unknown device code")
	case !now.Before(g.expiry):
		delete(s.users, g.userCode) // the user code can no longer be approved
		return nil, pending("expired_token")
	case g.denied:
		delete(s.devices, dc)
		delete(s.users, g.userCode)
		return nil, pending("access_denied")
	case !g.lastPoll.IsZero() && now.Sub(g.lastPoll) < g.interval:
		g.lastPoll = now
		g.interval += s.cfg.DeviceSlowDownStep
		return nil, pending("slow_down")
	case !g.approved:
		g.lastPoll = now
		return nil, pending("authorization_pending")
	}
	delete(s.devices, dc)
	delete(s.users, g.userCode)
	fam := s.newFamilyLocked(client, s.cfg.Subject, g.scopes)
	return s.issueLocked(fam, g.scopes, true), nil
}
