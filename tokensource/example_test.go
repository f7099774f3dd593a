package tokensource_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// A Source over an encrypted file store: log in once, then get valid tokens
// from any goroutine, across restarts.
func ExampleNew() {
	srv := authserver.New(authserver.Config{Rotate: true}) // stands in for a real provider
	defer srv.Close()
	ctx := context.Background()

	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	key, err := storage.RawKey(make([]byte, 32)) // in real programs: storage.KeyFromEnv or storage.KeyringKey
	if err != nil {
		log.Fatal(err)
	}
	store, err := storage.NewFile(filepath.Join(dir, "sessions"), key)
	if err != nil {
		log.Fatal(err)
	}
	refresher, err := tokensource.NewConfigRefresher(srv.OAuth2Config("openid", "offline_access"), srv.RevocationURL(), srv.Client())
	if err != nil {
		log.Fatal(err)
	}
	src, err := tokensource.New(refresher, store, "alice")
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	// After the user logs in (authorization code, device flow, ...):
	if err := src.Put(ctx, srv.Mint("openid", "offline_access")); err != nil {
		log.Fatal(err)
	}

	tok, err := src.TokenContext(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("valid:", tok.Valid(), "id_token kept:", tok.Extra("id_token") != nil)
	// Output: valid: true id_token kept: true
}

// A provider's refusal to refresh (the user revoked access, the session
// expired) is ErrReauthRequired: the program asks the user to log in again.
func ExampleErrReauthRequired() {
	srv := authserver.New(authserver.Config{})
	defer srv.Close()
	refresher, _ := tokensource.NewConfigRefresher(srv.OAuth2Config(), "", srv.Client())
	src, _ := tokensource.New(refresher, storage.NewMemory(), "alice")
	defer src.Close()
	login := srv.Mint()
	src.Put(context.Background(), login)

	srv.RevokeFamilyOf(login.RefreshToken) // the user revokes access at the provider
	src.Invalidate(login)                  // and an API refuses the access token

	_, err := src.Token()
	var re *oauth2.RetrieveError
	if errors.Is(err, tokensource.ErrReauthRequired) && errors.As(err, &re) {
		fmt.Println("log in again:", re.ErrorCode)
	}
	// Output: log in again: invalid_grant
}
