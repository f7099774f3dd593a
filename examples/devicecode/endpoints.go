package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// endpoints are the provider's URLs.
type endpoints struct {
	device string // RFC 8628 device authorization endpoint
	token  string
	revoke string // RFC 7009; empty if the provider has none
}

// resolve returns the endpoints from the flags, filling the missing ones from
// the issuer's discovery document. needDevice says whether the command needs
// the device authorization endpoint.
func (s *session) resolve(ctx context.Context, needDevice bool) (*endpoints, error) {
	o := s.opts
	ep := &endpoints{device: o.deviceURL, token: o.tokenURL, revoke: o.revokeURL}
	complete := ep.token != "" && ep.revoke != "" && (ep.device != "" || !needDevice)
	if o.issuer != "" && !complete {
		d, err := discover(ctx, s.hc, o.issuer)
		if err != nil {
			return nil, err
		}
		ep.device = cmp.Or(ep.device, d.DeviceAuthorizationEndpoint)
		ep.token = cmp.Or(ep.token, d.TokenEndpoint)
		ep.revoke = cmp.Or(ep.revoke, d.RevocationEndpoint)
	}
	switch {
	case ep.token == "":
		return nil, usagef("no token endpoint: give -issuer or -token-url")
	case needDevice && ep.device == "":
		return nil, usagef("no device authorization endpoint: give -issuer or -device-url (does the provider offer the device flow?)")
	}
	for _, u := range []string{ep.device, ep.token, ep.revoke} {
		if err := checkEndpoint(u); err != nil {
			return nil, err
		}
	}
	return ep, nil
}

// discovery is the part of an OpenID Connect discovery document (or an RFC
// 8414 authorization server metadata document) that devicecode uses.
type discovery struct {
	Issuer                      string `json:"issuer"`
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
	TokenEndpoint               string `json:"token_endpoint"`
	RevocationEndpoint          string `json:"revocation_endpoint"`
}

// discover fetches issuer's /.well-known/openid-configuration.
func discover(ctx context.Context, hc *http.Client, issuer string) (*discovery, error) {
	if err := checkEndpoint(issuer); err != nil {
		return nil, err
	}
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discovery: %s answered %s", u, resp.Status)
	}
	var d discovery
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&d); err != nil {
		return nil, fmt.Errorf("discovery: %s: %w", u, err)
	}
	return &d, nil
}

// checkEndpoint refuses URLs that would send secrets in clear text: an
// endpoint must use https, or plain http on a loopback host.
func checkEndpoint(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return usagef("%q is not an absolute URL", raw)
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return usagef("%q: endpoints must use https (plain http only on loopback)", raw)
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
