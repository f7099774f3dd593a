// Package oauthwire speaks the token and revocation endpoints of RFC 6749 and
// RFC 7009: it builds requests, authenticates the client and parses answers
// into oauth2 types. It exists so that tokenkeep sees every field, header and
// status the provider sent, which x/oauth2 keeps to itself.
package oauthwire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// MaxBody is the largest token endpoint answer read. A larger one is an
// error: no real token response comes near it.
const MaxBody = 1 << 20

// ErrMalformed is wrapped by errors about answers that are not a usable token
// response: unparseable, too large, without an access token, or with a field
// of the wrong kind (an expires_in that is not a positive number of seconds).
var ErrMalformed = errors.New("malformed token response")

// ErrInsecureEndpoint is wrapped when an endpoint would send secrets over
// plain HTTP to a host that is not loopback.
var ErrInsecureEndpoint = errors.New("endpoint must use https (plain http is allowed only for loopback hosts)")

// CheckEndpoint reports whether secrets may be sent to rawURL: https
// anywhere, http only to localhost and loopback addresses.
func CheckEndpoint(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("endpoint %q: %v", rawURL, err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if IsLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("endpoint %q: %w", u.Redacted(), ErrInsecureEndpoint)
	default:
		return fmt.Errorf("endpoint %q: unsupported scheme %q", u.Redacted(), u.Scheme)
	}
}

// IsLoopback reports whether host names this machine: "localhost" or an
// address in 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Client calls a provider's endpoints for one OAuth client.
// It is safe for concurrent use; its fields must not change after first
// use.
type Client struct {
	ClientID     string
	ClientSecret string
	// AuthStyle says how the client authenticates. AuthStyleAutoDetect
	// (the zero value) detects it: see [Client.Token].
	AuthStyle oauth2.AuthStyle
	// HTTP sends the requests. If nil, http.DefaultClient is used. Redirects
	// are never followed: a token endpoint that redirects is an error.
	HTTP *http.Client
	// Now is the clock used to turn expires_in into an expiry. If nil,
	// time.Now is used.
	Now func() time.Time

	tokenStyle  atomic.Int32 // the AuthStyle that worked at the token endpoint, once detected
	revokeStyle atomic.Int32 // the AuthStyle that worked at the revocation endpoint, once detected
}

// Token posts form to tokenURL and parses the answer. Failures the provider
// reports come back as *oauth2.RetrieveError, with Response set so that
// callers can read the status and Retry-After.
//
// Token may return a token and an error together: a 2xx answer that
// carries a refresh_token but whose other fields are unusable (no
// access_token, an expires_in that is not a positive number of seconds, a
// token_type that is not a string) yields a token holding that refresh
// token and whatever else parsed cleanly — its access token possibly empty,
// its Expiry zero — and an error wrapping ErrMalformed that says what was
// wrong. Such a token must be kept for its refresh token and never served.
//
// A request that was written but whose answer was not read whole fails
// with an error wrapping ErrInDoubt; see [WithSendTimeout] for how ctx
// bounds each request.
//
// With AuthStyle unset, a client without a secret sends its client_id in
// the body (a public client, RFC 6749 section 2.3.1), and a client with a
// secret tries HTTP Basic. When the provider refuses the client with 400 or
// 401 (invalid_client, or invalid_request from a provider that refuses the
// style), the request is sent again the other way; a refused request was
// not processed, so sending it again is safe. The style that the provider
// accepted is tried first by later calls, at the token and the revocation
// endpoint alike; should the provider refuse it some day, the other style
// is tried again.
func (c *Client) Token(ctx context.Context, tokenURL string, form url.Values) (*oauth2.Token, error) {
	if err := CheckEndpoint(tokenURL); err != nil {
		return nil, err
	}
	var t *oauth2.Token
	err := c.authenticate(&c.tokenStyle, &c.revokeStyle, func(style oauth2.AuthStyle) (int, error) {
		var status int
		var err error
		t, status, err = c.token(ctx, tokenURL, form, style)
		return status, err
	})
	return t, err
}

// token makes one token request and reports the answer's status, or 0 if
// none was read.
func (c *Client) token(ctx context.Context, tokenURL string, form url.Values, style oauth2.AuthStyle) (*oauth2.Token, int, error) {
	resp, body, err := c.post(ctx, tokenURL, form, style)
	if resp == nil {
		return nil, 0, err
	}
	if err != nil && success(resp.StatusCode) {
		return nil, 0, err // cut short: a token may have been issued
	}
	// A refusal whose body was cut short is still a refusal: its status
	// (and Retry-After) say what the provider decided.
	t, err := c.parse(resp, body)
	return t, resp.StatusCode, err
}

func success(status int) bool { return status >= 200 && status <= 299 }

// Revoke asks revokeURL to revoke token (RFC 7009). hint is
// "refresh_token", "access_token" or empty. With AuthStyle unset the client
// authenticates as [Client.Token] describes, starting with the style that
// worked at the token endpoint when there is one.
func (c *Client) Revoke(ctx context.Context, revokeURL, token, hint string) error {
	if err := CheckEndpoint(revokeURL); err != nil {
		return err
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	return c.authenticate(&c.revokeStyle, &c.tokenStyle, func(style oauth2.AuthStyle) (int, error) {
		resp, body, err := c.post(ctx, revokeURL, form, style)
		if resp == nil {
			return 0, err
		}
		if resp.StatusCode == http.StatusOK {
			return resp.StatusCode, nil // the body does not matter (RFC 7009 section 2.2)
		}
		re := &oauth2.RetrieveError{Response: resp, Body: body}
		parseError(resp.Header.Get("Content-Type"), body, re)
		return resp.StatusCode, re
	})
}

// post sends form to endpoint, authenticating the client in style, and
// reads the answer as [Client.exchange] does.
func (c *Client) post(ctx context.Context, endpoint string, form url.Values, style oauth2.AuthStyle) (*http.Response, []byte, error) {
	v := make(url.Values, len(form)+2)
	for k, vs := range form {
		v[k] = vs
	}
	if style == oauth2.AuthStyleInParams {
		if c.ClientID != "" {
			v.Set("client_id", c.ClientID)
		}
		if c.ClientSecret != "" {
			v.Set("client_secret", c.ClientSecret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(v.Encode()))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if style == oauth2.AuthStyleInHeader {
		// RFC 6749 section 2.3.1: form-encode each part before Basic.
		req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(c.ClientSecret))
	}
	return c.exchange(ctx, req)
}

func (c *Client) httpClient() *http.Client {
	hc := http.DefaultClient
	if c.HTTP != nil {
		hc = c.HTTP
	}
	nc := *hc
	nc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &nc
}

// readBody reads an answer's body, up to MaxBody bytes. On a read error it
// returns the part read.
func readBody(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	if err != nil {
		return body, fmt.Errorf("read answer: %w", err)
	}
	if len(body) > MaxBody {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxBody)
	}
	return body, nil
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// parse turns an answer into a token or an error, or both when a 2xx
// answer is salvaged (see [Client.Token]). Secrets in body are never copied
// into an error message.
func (c *Client) parse(resp *http.Response, body []byte) (*oauth2.Token, error) {
	ct := resp.Header.Get("Content-Type")
	if !success(resp.StatusCode) {
		re := &oauth2.RetrieveError{Response: resp, Body: body}
		parseError(ct, body, re)
		return nil, re
	}
	fields, err := decodeFields(ct, body)
	if err != nil {
		return nil, err
	}
	if code, _ := fields["error"].(string); code != "" {
		// Some providers answer 200 with an error object.
		re := &oauth2.RetrieveError{Response: resp, Body: body, ErrorCode: code}
		re.ErrorDescription, _ = fields["error_description"].(string)
		re.ErrorURI, _ = fields["error_uri"].(string)
		return nil, re
	}
	return c.tokenFrom(fields)
}

// tokenFrom reads a token response's fields one by one, so that a field
// that is unusable spoils only itself. The result is (t, nil) when every
// field is usable; (t, err) when the refresh token is but something else is
// not, t holding the usable fields with a zero Expiry; (nil, err) when there
// is no usable refresh token either.
func (c *Client) tokenFrom(fields map[string]any) (*oauth2.Token, error) {
	var problems []string
	t := new(oauth2.Token)
	switch v := fields["access_token"].(type) {
	case string:
		t.AccessToken = v
	case nil:
	default:
		problems = append(problems, "access_token is not a string")
	}
	if t.AccessToken == "" && len(problems) == 0 {
		problems = append(problems, "no access_token")
	}
	switch v := fields["token_type"].(type) {
	case string:
		t.TokenType = v
	case nil:
	default:
		problems = append(problems, "token_type is not a string")
	}
	switch v := fields["refresh_token"].(type) {
	case string:
		t.RefreshToken = v
	case nil:
	default:
		problems = append(problems, "refresh_token is not a string")
	}
	secs, err := expiresIn(fields["expires_in"])
	switch {
	case err != nil:
		problems = append(problems, err.Error())
	case secs < 0:
		problems = append(problems, "expires_in is negative")
	case secs > 0:
		t.ExpiresIn = secs
		t.Expiry = c.now().Add(time.Duration(secs) * time.Second)
	}
	t = t.WithExtra(fields)
	if len(problems) == 0 {
		return t, nil
	}
	err = fmt.Errorf("%w: %s", ErrMalformed, strings.Join(problems, "; "))
	if t.RefreshToken == "" {
		return nil, err
	}
	t.ExpiresIn, t.Expiry = 0, time.Time{}
	return t, err
}

// expiresIn reads expires_in given as a JSON number, a float, or a string
// holding either (as Azure AD v1 and PayPal send it). Absent or null means
// no stated lifetime. Values beyond int32 seconds (68 years) are capped.
func expiresIn(v any) (int64, error) {
	var f float64
	switch x := v.(type) {
	case nil:
		return 0, nil
	case json.Number:
		var err error
		if f, err = x.Float64(); err != nil {
			return 0, errors.New("expires_in is not a number")
		}
	case string:
		var err error
		if f, err = strconv.ParseFloat(strings.TrimSpace(x), 64); err != nil {
			return 0, errors.New("expires_in is not a number")
		}
	default:
		return 0, errors.New("expires_in is not a number")
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("expires_in is not a number")
	}
	return int64(math.Max(math.Min(f, math.MaxInt32), math.MinInt32)), nil
}

// decodeFields reads a JSON object or, for providers that still send them,
// a form-encoded body. Each form field keeps its first value.
func decodeFields(contentType string, body []byte) (map[string]any, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/x-www-form-urlencoded" || mt == "text/plain" {
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("%w: form body does not parse", ErrMalformed)
		}
		fields := make(map[string]any, len(vals))
		for k := range vals {
			fields[k] = vals.Get(k)
		}
		return fields, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	var fields map[string]any
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, fmt.Errorf("%w: body is not a JSON object (Content-Type %q, %d bytes)", ErrMalformed, mt, len(body))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	return fields, nil
}

// parseError fills re's error fields from an error body, when it has them.
func parseError(contentType string, body []byte, re *oauth2.RetrieveError) {
	fields, err := decodeFields(contentType, body)
	if err != nil {
		return
	}
	re.ErrorCode, _ = fields["error"].(string)
	re.ErrorDescription, _ = fields["error_description"].(string)
	re.ErrorURI, _ = fields["error_uri"].(string)
}

// RetryAfter reads a Retry-After header (RFC 9110 section 10.2.3): delay
// seconds or an HTTP-date. It reports false for an absent or unusable value.
// Negative results are clamped to zero.
func RetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > math.MaxInt64/int64(time.Second) {
			secs = math.MaxInt64 / int64(time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(at.Sub(now), 0), true
}
