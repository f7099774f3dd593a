package tokensource

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/oauthwire"
)

// Refresher obtains a new token from a provider. t is the latest token known
// (its refresh token, for the refresh_token grant); it may be nil when
// nothing is stored, which refreshers that need no prior token (client
// credentials, service accounts) accept.
//
// Refresh is called by at most one goroutine of a Source at a time, with a
// context that carries the refresh's own deadline. Errors that the provider
// reports should be (or wrap) *oauth2.RetrieveError with Response set, so
// that the status code and Retry-After drive the retry policy.
//
// A Refresher may return a token and an error together: the provider issued
// t.RefreshToken, but the rest of its answer is unusable; the Source saves
// the refresh token. Such a token carries at least its refresh token; its
// access token may be empty and its Expiry zero, and it is never served.
type Refresher interface {
	Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error)
}

// Revoker is implemented by refreshers that can revoke tokens at the
// provider (RFC 7009). Source.Revoke uses it when present.
type Revoker interface {
	Revoke(ctx context.Context, t *oauth2.Token) error
}

// RefresherFunc adapts a function to the Refresher interface.
type RefresherFunc func(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error)

// Refresh calls f(ctx, t).
func (f RefresherFunc) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	if f == nil {
		return nil, errors.New("tokensource: nil RefresherFunc")
	}
	return f(ctx, t)
}

// ErrNoRevocationEndpoint is returned (wrapped) by Revoke when the provider
// offers no way to revoke: the local copy is deleted, but the provider keeps
// honouring the refresh token until it expires.
var ErrNoRevocationEndpoint = errors.New("tokensource: no revocation endpoint configured")

// ConfigRefresher redeems refresh tokens (RFC 6749 section 6) at the token
// endpoint of an *oauth2.Config, and revokes them (RFC 7009) when
// RevocationURL is set. It reads the whole answer itself, so the provider's
// extra fields (id_token, scope) and its Retry-After header are kept.
//
// Token and revocation endpoints must use https; plain http is accepted only
// for loopback hosts. A ConfigRefresher is safe for concurrent use; its
// fields must not change after first use.
type ConfigRefresher struct {
	// Config names the client and its endpoint. Required.
	Config *oauth2.Config
	// RevocationURL is the provider's RFC 7009 endpoint. If empty, Revoke
	// returns ErrNoRevocationEndpoint.
	RevocationURL string
	// HTTPClient sends the requests. If nil, http.DefaultClient is used.
	// Each request is bounded by the Source's deadlines. A Timeout set on
	// the client also cuts the wait for the answer to a request already
	// sent, which then ends in doubt; leave it zero.
	HTTPClient *http.Client
	// AuthMethods is the provider's token_endpoint_auth_methods_supported,
	// from its discovery document (RFC 8414, OpenID Connect Discovery). When
	// Config.Endpoint.AuthStyle is unset, it picks the style up front:
	// client_secret_basic, client_secret_post, or none for a client without
	// a secret. If nil, or if it names none of these, the style is detected
	// on first use: a client without a secret sends its client_id in the
	// body, one with a secret tries HTTP Basic, then the body, and the
	// style that worked is kept.
	AuthMethods []string

	now func() time.Time // for tests; nil means time.Now

	once sync.Once
	wire *oauthwire.Client // built from the fields above on first use
}

// NewConfigRefresher returns a ConfigRefresher for cfg, checking its
// endpoints. revocationURL may be empty.
func NewConfigRefresher(cfg *oauth2.Config, revocationURL string, hc *http.Client) (*ConfigRefresher, error) {
	r := &ConfigRefresher{Config: cfg, RevocationURL: revocationURL, HTTPClient: hc}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// Validate reports a missing config or an endpoint that would carry secrets
// over plain HTTP.
func (r *ConfigRefresher) Validate() error {
	if r == nil || r.Config == nil {
		return errors.New("tokensource: ConfigRefresher has no Config")
	}
	if err := oauthwire.CheckEndpoint(r.Config.Endpoint.TokenURL); err != nil {
		return fmt.Errorf("tokensource: token %w", err)
	}
	if r.RevocationURL != "" {
		if err := oauthwire.CheckEndpoint(r.RevocationURL); err != nil {
			return fmt.Errorf("tokensource: revocation %w", err)
		}
	}
	return nil
}

func (r *ConfigRefresher) client() *oauthwire.Client {
	r.once.Do(func() {
		style := r.Config.Endpoint.AuthStyle
		if style == oauth2.AuthStyleAutoDetect {
			style = oauthwire.AuthStyleFromMethods(r.AuthMethods, r.Config.ClientSecret != "")
		}
		r.wire = &oauthwire.Client{
			ClientID:     r.Config.ClientID,
			ClientSecret: r.Config.ClientSecret,
			AuthStyle:    style,
			HTTP:         r.HTTPClient,
			Now:          r.now,
		}
	})
	return r.wire
}

// Refresh implements Refresher with the refresh_token grant. A token without
// a refresh token yields an error that matches ErrReauthRequired.
//
// A 2xx answer that carries a refresh token but is otherwise unusable is
// returned as a token holding that refresh token together with an error
// that says what was wrong, as the Refresher contract allows. A request
// that was sent but whose answer was not read whole fails with an error
// saying that its outcome is in doubt: the provider may have rotated the
// refresh token.
func (r *ConfigRefresher) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if t == nil || t.RefreshToken == "" {
		return nil, &reauthError{msg: "no refresh token stored"}
	}
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {t.RefreshToken},
	}
	return r.client().Token(ctx, r.Config.Endpoint.TokenURL, form)
}

// boundsSending tells the Source that Refresh honours the send timeout set
// with oauthwire.WithSendTimeout: it gives up on a request only before the
// request was written, and reports the outcome as in doubt after.
func (r *ConfigRefresher) boundsSending() {}

// Revoke implements Revoker: it revokes t's refresh token, or its access
// token when it has none. Revoking a refresh token also ends the access
// tokens issued from it at most providers (RFC 7009 section 2.1). A nil or
// empty t is an error. The client authenticates as for Refresh.
func (r *ConfigRefresher) Revoke(ctx context.Context, t *oauth2.Token) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if t == nil || t.RefreshToken == "" && t.AccessToken == "" {
		return errors.New("tokensource: no token to revoke")
	}
	if r.RevocationURL == "" {
		return ErrNoRevocationEndpoint
	}
	token, hint := t.RefreshToken, "refresh_token"
	if token == "" {
		token, hint = t.AccessToken, "access_token"
	}
	return r.client().Revoke(ctx, r.RevocationURL, token, hint)
}

// FromTokenSource adapts providers that mint tokens through an
// oauth2.TokenSource (client credentials, Google service accounts, workload
// identity) to a Refresher. newSource is called for every refresh with the
// refresh's context, so the TokenSource's HTTP requests honour its deadline;
// it must return a TokenSource that fetches a new token, not one that caches.
//
//	cc := &clientcredentials.Config{…}
//	r := tokensource.FromTokenSource(cc.TokenSource)
func FromTokenSource(newSource func(ctx context.Context) oauth2.TokenSource) Refresher {
	return RefresherFunc(func(ctx context.Context, _ *oauth2.Token) (*oauth2.Token, error) {
		var ts oauth2.TokenSource
		if newSource != nil {
			ts = newSource(ctx)
		}
		if ts == nil {
			return nil, errors.New("tokensource: FromTokenSource has no TokenSource")
		}
		return ts.Token()
	})
}
