package certprovider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
)

// publicRedirectURL is the public client's redirect: the registered one
// with a port of the client's choosing, which the provider must accept
// (RFC 8252 section 7.3). Nothing listens there: browse stops before it.
const publicRedirectURL = "http://127.0.0.1:49152/callback"

// browse does what a browser does with authURL: it follows the provider's
// redirects, keeping its cookies, until the provider sends it to redirect,
// and returns the code found there.
func browse(ctx context.Context, authURL, redirect, state string) (string, error) {
	target, err := url.Parse(redirect)
	if err != nil {
		return "", err
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", err
	}
	var landed *url.URL
	hc := &http.Client{
		Jar:       jar,
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			u := req.URL
			if u.Scheme == target.Scheme && u.Host == target.Host && u.Path == target.Path {
				landed = u
				return http.ErrUseLastResponse
			}
			if len(via) >= 20 {
				return errors.New("certprovider: more than 20 redirects")
			}
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("certprovider: authorization request: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if landed == nil {
		return "", fmt.Errorf("certprovider: the provider answered %s without sending the browser back to the client:\n%s", resp.Status, body)
	}
	q := landed.Query()
	switch {
	case q.Get("error") != "":
		return "", fmt.Errorf("certprovider: authorization refused: %s: %s", q.Get("error"), q.Get("error_description"))
	case q.Get("state") != state:
		return "", errors.New("certprovider: the redirect carries another state")
	case q.Get("code") == "":
		return "", errors.New("certprovider: the redirect carries no code")
	}
	return q.Get("code"), nil
}
