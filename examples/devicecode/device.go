package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// deviceGrantType is the grant type of RFC 8628 section 3.4.
const deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// maxTransient is how many failed polls in a row (network errors, 5xx) end
// the login.
const maxTransient = 5

// oauthError is an error answer of an OAuth endpoint.
type oauthError struct {
	Status      int
	Code        string // the OAuth error code; empty if the answer had none
	Description string
}

func (e *oauthError) Error() string {
	switch {
	case e.Code == "":
		return fmt.Sprintf("the provider answered HTTP %d", e.Status)
	case e.Description == "":
		return fmt.Sprintf("the provider answered %s (HTTP %d)", e.Code, e.Status)
	}
	return fmt.Sprintf("the provider answered %s: %s (HTTP %d)", e.Code, e.Description, e.Status)
}

// transient reports whether a later attempt may succeed.
func transient(err error) bool {
	var oe *oauthError
	if errors.As(err, &oe) {
		return oe.Status >= 500 || oe.Status == http.StatusTooManyRequests || oe.Code == "temporarily_unavailable"
	}
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled)
}

// deviceClient speaks the device flow for one OAuth client.
type deviceClient struct {
	hc           *http.Client
	clientID     string
	clientSecret string
}

// post sends form to endpoint, authenticating the client, and returns the
// body of a 2xx answer. Error answers become *oauthError.
func (c *deviceClient) post(ctx context.Context, endpoint string, form url.Values) ([]byte, error) {
	form.Set("client_id", c.clientID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.clientSecret != "" {
		req.SetBasicAuth(url.QueryEscape(c.clientID), url.QueryEscape(c.clientSecret))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		oe := &oauthError{Status: resp.StatusCode}
		var e struct {
			Code        string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &e) == nil {
			oe.Code, oe.Description = e.Code, e.Description
		}
		return nil, oe
	}
	return body, nil
}

// start asks for a device code and a user code (RFC 8628 section 3.1).
func (c *deviceClient) start(ctx context.Context, endpoint string, scopes []string, audience string) (*oauth2.DeviceAuthResponse, error) {
	form := url.Values{}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	if audience != "" {
		form.Set("audience", audience)
	}
	body, err := c.post(ctx, endpoint, form)
	if err != nil {
		return nil, fmt.Errorf("device authorization: %w", err)
	}
	var da oauth2.DeviceAuthResponse
	if err := json.Unmarshal(body, &da); err != nil {
		return nil, fmt.Errorf("device authorization: unreadable answer: %w", err)
	}
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" {
		return nil, errors.New("device authorization: the answer lacks device_code, user_code or verification_uri")
	}
	return &da, nil
}

// await polls the token endpoint until the user approves or denies the
// request or the code expires (RFC 8628 section 3.4 and 3.5). It waits the
// interval the provider asked for between polls, adding five seconds to it
// whenever the provider answers slow_down.
func (c *deviceClient) await(ctx context.Context, tokenURL string, da *oauth2.DeviceAuthResponse, p *progress) (*oauth2.Token, error) {
	interval := time.Duration(da.Interval) * time.Second
	if interval <= 0 {
		interval = 5 * time.Second // RFC 8628 section 3.2
	}
	form := url.Values{"grant_type": {deviceGrantType}, "device_code": {da.DeviceCode}}
	failures := 0
	p.waiting(interval)
	for {
		if err := sleep(ctx, interval); err != nil {
			return nil, err
		}
		if !da.Expiry.IsZero() && time.Now().After(da.Expiry) {
			return nil, errExpired
		}
		tok, err := c.token(ctx, tokenURL, form)
		var oe *oauthError
		errors.As(err, &oe)
		switch {
		case err == nil:
			return tok, nil
		case oe != nil && oe.Code == "authorization_pending":
			failures = 0
			p.tick()
		case oe != nil && oe.Code == "slow_down":
			failures = 0
			interval += 5 * time.Second
			p.slowDown(interval)
		case oe != nil && oe.Code == "access_denied":
			return nil, errDenied
		case oe != nil && oe.Code == "expired_token":
			return nil, errExpired
		case transient(err) && failures+1 < maxTransient:
			failures++
			p.retrying(err)
		default:
			return nil, fmt.Errorf("waiting for approval: %w", err)
		}
	}
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// token makes one token request and parses a successful answer, keeping
// its extra fields (id_token, scope).
func (c *deviceClient) token(ctx context.Context, tokenURL string, form url.Values) (*oauth2.Token, error) {
	body, err := c.post(ctx, tokenURL, form)
	if err != nil {
		return nil, err
	}
	return parseToken(body, time.Now())
}

// parseToken reads a token response (RFC 6749 section 5.1).
func parseToken(body []byte, now time.Time) (*oauth2.Token, error) {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("token response: not JSON: %w", err)
	}
	str := func(k string) string { s, _ := raw[k].(string); return s }
	t := &oauth2.Token{
		AccessToken:  str("access_token"),
		TokenType:    str("token_type"),
		RefreshToken: str("refresh_token"),
	}
	if t.AccessToken == "" {
		return nil, errors.New("token response: no access_token")
	}
	if secs := expiresIn(raw["expires_in"]); secs > 0 {
		t.ExpiresIn = secs
		t.Expiry = now.Add(time.Duration(secs) * time.Second)
	}
	return t.WithExtra(raw), nil
}

// expiresIn reads expires_in, which some providers send as a string.
func expiresIn(v any) int64 {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = v.String()
	case string:
		s = v
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// progress tells the user that polling goes on. On a terminal it redraws one
// line; elsewhere it writes a line per change only.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
}

func (p *progress) waiting(every time.Duration) {
	p.start = time.Now()
	fmt.Fprintf(p.w, "Waiting for approval (checking every %v)...", every)
	if !p.tty {
		fmt.Fprintln(p.w)
	}
}

func (p *progress) tick() {
	if p.tty {
		fmt.Fprintf(p.w, "\rWaiting for approval... %v elapsed ", time.Since(p.start).Round(time.Second))
	}
}

func (p *progress) slowDown(every time.Duration) {
	p.line("The provider asked to poll less often; checking every %v now.", every)
}

func (p *progress) retrying(err error) {
	p.line("Could not reach the provider (%v); trying again.", err)
}

// line writes a message on a line of its own.
func (p *progress) line(format string, args ...any) {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// done ends the progress line.
func (p *progress) done() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
