package oauthwire

import (
	"errors"
	"net/http"
	"slices"
	"sync/atomic"

	"golang.org/x/oauth2"
)

// authenticate runs try once with the client's authentication style, or,
// with AuthStyle unset, detects the style as [Client.Token] describes. memo
// holds the style that worked at this endpoint; other, the one that worked
// at the client's other endpoint, which is tried first when memo holds
// none. try reports the status of the answer it read, or 0 if none.
func (c *Client) authenticate(memo, other *atomic.Int32, try func(oauth2.AuthStyle) (int, error)) error {
	if c.AuthStyle != oauth2.AuthStyleAutoDetect {
		_, err := try(c.AuthStyle)
		return err
	}
	first := oauth2.AuthStyle(memo.Load())
	if first == oauth2.AuthStyleAutoDetect {
		first = oauth2.AuthStyle(other.Load())
	}
	if first == oauth2.AuthStyleAutoDetect {
		first = oauth2.AuthStyleInHeader
		if c.ClientSecret == "" {
			first = oauth2.AuthStyleInParams // a public client: no Basic with an empty secret
		}
	}
	status, err := try(first)
	if refusesClient(status, err) {
		// The provider refused the client this way (and may have changed
		// its mind since the style was remembered): try the other way.
		first = otherStyle(first)
		status, err = try(first)
	}
	if accepted(status, err) {
		memo.Store(int32(first))
	}
	return err
}

// otherStyle returns the style that s is not.
func otherStyle(s oauth2.AuthStyle) oauth2.AuthStyle {
	if s == oauth2.AuthStyleInHeader {
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}

// refusesClient reports whether an answer may mean that the provider wants
// the client's credentials sent another way: 401, invalid_client or
// unauthorized_client, or a 400 invalid_request (or a 400 without an OAuth
// error) from a provider that refuses HTTP Basic for a public client. No
// such answer processes the grant, so sending the request again is safe.
func refusesClient(status int, err error) bool {
	var re *oauth2.RetrieveError
	if status == 0 || !errors.As(err, &re) {
		return false
	}
	switch re.ErrorCode {
	case "invalid_client", "unauthorized_client":
		return true
	case "invalid_request", "":
		return status == http.StatusBadRequest || status == http.StatusUnauthorized
	}
	return status == http.StatusUnauthorized
}

// accepted reports whether an answer shows that the provider authenticated
// the client: a 2xx, or an OAuth error about something else (invalid_grant
// and the like come after client authentication).
func accepted(status int, err error) bool {
	if refusesClient(status, err) {
		return false
	}
	if success(status) {
		return true
	}
	var re *oauth2.RetrieveError
	return status >= 400 && status < 500 && errors.As(err, &re) && re.ErrorCode != ""
}

// AuthStyleFromMethods picks how a client authenticates from a provider's
// token_endpoint_auth_methods_supported (RFC 8414 section 2, OpenID Connect
// Discovery): "client_secret_basic" gives AuthStyleInHeader, preferred
// when both are listed, and "client_secret_post" AuthStyleInParams. A
// client without a secret gets AuthStyleInParams when "none" is listed.
// Anything else — an empty list, or only methods this package does not
// speak, such as private_key_jwt — gives AuthStyleAutoDetect, which detects
// the style on first use.
func AuthStyleFromMethods(methods []string, hasSecret bool) oauth2.AuthStyle {
	switch {
	case !hasSecret:
		if slices.Contains(methods, "none") {
			return oauth2.AuthStyleInParams
		}
	case slices.Contains(methods, "client_secret_basic"):
		return oauth2.AuthStyleInHeader
	case slices.Contains(methods, "client_secret_post"):
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleAutoDetect
}
