package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// login runs the device flow and saves the session.
func login(ctx context.Context, s *session, stdout, stderr io.Writer) error {
	ep, err := s.resolve(ctx, true)
	if err != nil {
		return err
	}
	dc := &deviceClient{hc: s.hc, clientID: s.opts.clientID, clientSecret: s.opts.clientSecret}
	da, err := dc.start(ctx, ep.device, strings.Fields(s.opts.scopes), s.opts.audience)
	if err != nil {
		return err
	}
	showCode(stdout, da)
	p := &progress{w: stderr, tty: isTerminal(stderr)}
	tok, err := dc.await(ctx, ep.token, da, p)
	p.done()
	if err != nil {
		return err
	}
	src, err := s.source(ep)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := src.Put(ctx, tok); err != nil {
		return fmt.Errorf("save the session: %w", err)
	}
	fmt.Fprintf(stdout, "Logged in%s. The session is saved in %s.\n", asWhom(tok), s.where)
	if tok.RefreshToken == "" {
		fmt.Fprintln(stdout, "The provider issued no refresh token (request the offline_access scope?): you will have to log in again when the access token expires.")
	}
	return nil
}

// showCode tells the user where to go and what to enter.
func showCode(w io.Writer, da *oauth2.DeviceAuthResponse) {
	fmt.Fprintf(w, "To sign in, open %s in a browser on any device\nand enter the code: %s\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(w, "Or open this link, which carries the code: %s\n", da.VerificationURIComplete)
	}
	if !da.Expiry.IsZero() {
		fmt.Fprintf(w, "The code expires at %s.\n", da.Expiry.Local().Format(time.Kitchen))
	}
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// status describes the stored session without printing any token and
// without calling the provider.
func status(ctx context.Context, s *session, stdout, _ io.Writer) error {
	tok, err := storage.LoadToken(ctx, s.store, s.entry())
	if err != nil {
		return err
	}
	c := claims(tok)
	who := describeUser(c["name"], c["sub"], c["email"])
	if who == "" {
		who = "unknown (no ID token)"
	} else {
		who += "   (unverified: read from the ID token without checking its signature)"
	}
	fmt.Fprintf(stdout, "Logged in as:   %s\n", who)
	fmt.Fprintf(stdout, "Access token:   %s\n", expiryText(tok.Expiry, tok.RefreshToken != ""))
	if tok.RefreshToken != "" {
		fmt.Fprintln(stdout, "Refresh token:  present")
	} else {
		fmt.Fprintln(stdout, "Refresh token:  none; log in again when the access token expires")
	}
	scopes, _ := tok.Extra("scope").(string)
	if scopes == "" {
		scopes = "(not reported by the provider)"
	}
	fmt.Fprintf(stdout, "Scopes:         %s\n", scopes)
	fmt.Fprintf(stdout, "Stored in:      %s\n", s.where)
	return nil
}

// expiryText says how long an access token lasts.
func expiryText(exp time.Time, renewable bool) string {
	switch {
	case exp.IsZero():
		return "no stated expiry"
	case time.Until(exp) > 0:
		return fmt.Sprintf("valid until %s (%v left)", exp.Local().Format(time.DateTime), time.Until(exp).Round(time.Second))
	case renewable:
		return fmt.Sprintf("expired at %s; renewed on next use", exp.Local().Format(time.DateTime))
	}
	return fmt.Sprintf("expired at %s", exp.Local().Format(time.DateTime))
}

// claims decodes the payload of the token's id_token without verifying its
// signature: good enough to show who is logged in, never to authorize.
func claims(tok *oauth2.Token) map[string]string {
	out := map[string]string{}
	idt, _ := tok.Extra("id_token").(string)
	parts := strings.Split(idt, ".")
	if len(parts) < 2 {
		return out
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return out
	}
	var m map[string]any
	if json.Unmarshal(payload, &m) != nil {
		return out
	}
	for _, k := range []string{"sub", "name", "email"} {
		if v, ok := m[k].(string); ok {
			out[k] = v
		}
	}
	return out
}

// describeUser describes a user as "name (sub) <email>", leaving out what is
// missing.
func describeUser(name, sub, email string) string {
	var b strings.Builder
	b.WriteString(name)
	if sub != "" {
		if name != "" {
			b.WriteString(" (" + sub + ")")
		} else {
			b.WriteString(sub)
		}
	}
	if email != "" {
		b.WriteString(" <" + email + ">")
	}
	return strings.TrimSpace(b.String())
}

// asWhom returns " as NAME" from the unverified ID token, or nothing.
func asWhom(tok *oauth2.Token) string {
	c := claims(tok)
	if who := describeUser(c["name"], c["sub"], c["email"]); who != "" {
		return " as " + who
	}
	return ""
}

// printToken writes a valid access token, and nothing else, on stdout.
func printToken(ctx context.Context, s *session, stdout, _ io.Writer) error {
	ep, err := s.resolve(ctx, false)
	if err != nil {
		return err
	}
	src, err := s.source(ep)
	if err != nil {
		return err
	}
	defer src.Close()
	tok, err := src.TokenContext(ctx)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok.AccessToken)
	return err
}

// logout revokes the session at the provider and deletes the local copy.
func logout(ctx context.Context, s *session, stdout, stderr io.Writer) error {
	if _, err := storage.LoadToken(ctx, s.store, s.entry()); errors.Is(err, storage.ErrNotFound) {
		fmt.Fprintln(stdout, "Not logged in; nothing to do.")
		return nil
	}
	ep, err := s.resolve(ctx, false)
	if err != nil {
		return err
	}
	src, err := s.source(ep)
	if err != nil {
		return err
	}
	defer src.Close()
	err = src.Revoke(ctx)
	switch {
	case errors.Is(err, tokensource.ErrNoRevocationEndpoint):
		fmt.Fprintln(stdout, "Logged out: the session was deleted here.")
		fmt.Fprintln(stderr, "Warning: the provider has no revocation endpoint, so it still honours the refresh token until it expires.")
		return nil
	case err != nil:
		return err
	}
	fmt.Fprintln(stdout, "Logged out: the session was revoked at the provider and deleted here.")
	return nil
}
